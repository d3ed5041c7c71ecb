"""Stain normalisation: make smears from different labs and stain batches look alike before a model sees them.

Two classic methods, in plain numpy, on ``uint8`` RGB images ``[height, width, 3]``:

- **Reinhard** (Reinhard et al. 2001): match each CIE Lab channel's mean and standard deviation to a reference.
  Cheap and robust; it moves all colours together, so it cannot change the balance between two dyes.
- **Macenko** (Macenko et al. 2009): find the two dye colours of an image in optical density space, unmix every
  pixel into dye amounts, rescale the amounts to the reference's, and remix with the reference's dye colours.

Statistics come from stained pixels only: the pale background between cells would otherwise dominate them and
carries no stain information. A fitted reference is a small frozen dataclass that turns into a plain dict
(``as_dict`` / ``from_dict``) so that it can travel inside a model checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from leukolens.io.common import LeukolensError

METHODS = ("none", "reinhard", "macenko")

TISSUE_MAX_LIGHTNESS = 80.0
"""Reinhard: a pixel is stained when its CIE L* is below this (staintools' luminosity threshold of 0.8). The
cream or grey background of a smear sits at L* 85-95; red cells and white cells are darker."""

MIN_TISSUE_PIXELS = 100
"""Fewer stained pixels than this and the statistics are noise: Reinhard falls back to all pixels, Macenko
leaves the image unchanged (and refuses to fit a reference on it)."""

LIGHT_INTENSITY = 240.0
"""Macenko's ``Io``: the brightness of unstained glass. Brighter pixels get a slightly negative optical density,
which the linear unmixing carries through unchanged."""

# Colour maths runs in float32: twice as fast as float64, and every one of the 2^24 sRGB colours still survives the
# round trip RGB -> Lab -> RGB exactly.
# sRGB (D65) primaries -> CIE XYZ (IEC 61966-2-1).
_XYZ_FROM_LINEAR_RGB = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
# The D65 white point as the matrix maps sRGB white, rather than the rounded (0.95047, 1, 1.08883), so that white
# lands exactly on a* = b* = 0.
_WHITE = _XYZ_FROM_LINEAR_RGB.sum(axis=1)
_XYZ_RELATIVE_FROM_LINEAR = (_XYZ_FROM_LINEAR_RGB / _WHITE[:, None]).T.astype(np.float32)  # for row vectors
_LINEAR_FROM_XYZ_RELATIVE = (np.linalg.inv(_XYZ_FROM_LINEAR_RGB) * _WHITE[None, :]).T.astype(np.float32)
_EPSILON = (6 / 29) ** 3  # where CIE's cube root switches to its linear toe
# sRGB decoding for every uint8 level: a lookup is exact and faster than the power law per pixel.
_levels = np.arange(256) / 255
_LINEAR_FROM_LEVEL = np.where(_levels <= 0.04045, _levels / 12.92, ((_levels + 0.055) / 1.055) ** 2.4)
_LINEAR_FROM_LEVEL = _LINEAR_FROM_LEVEL.astype(np.float32)


# ------------------------------------------------------------------------------------------------------ colour
def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of ``uint8`` sRGB pixels ``[..., 3]``: L* in [0, 100], a* and b* roughly in [-128, 127]."""
    linear = _LINEAR_FROM_LEVEL[image]  # [..., 3]
    xyz = linear @ _XYZ_RELATIVE_FROM_LINEAR  # [..., 3], relative to the white point
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1
    )


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """``uint8`` sRGB pixels from CIE L*a*b* (D65) ``[..., 3]``; colours outside the sRGB gamut are clipped."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)  # [..., 3]
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29))
    linear = np.clip(xyz @ _LINEAR_FROM_XYZ_RELATIVE, 0, 1)
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(encoded * 255), 0, 255).astype(np.uint8)


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [height, width, 3], got {image.dtype} {image.shape}")


# ------------------------------------------------------------------------------------------------------ Reinhard
@dataclass(frozen=True)
class ReinhardReference:
    """Target colour statistics: per-channel mean and standard deviation of the stained pixels in CIE Lab."""

    lab_mean: tuple[float, float, float]
    lab_std: tuple[float, float, float]

    def as_dict(self) -> dict:
        return {"lab_mean": list(self.lab_mean), "lab_std": list(self.lab_std)}

    @classmethod
    def from_dict(cls, stored: dict) -> ReinhardReference:
        return cls(_floats(stored, "lab_mean", 3), _floats(stored, "lab_std", 3))


def _lab_statistics(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per Lab channel over the stained pixels, or all pixels if too few are."""
    pixels = lab.reshape(-1, 3)
    stained = pixels[pixels[:, 0] < TISSUE_MAX_LIGHTNESS]
    if len(stained) >= MIN_TISSUE_PIXELS:
        pixels = stained
    return pixels.mean(axis=0), pixels.std(axis=0)


def reinhard_fit(image: np.ndarray) -> ReinhardReference:
    """The Reinhard reference of a ``uint8`` RGB image ``[height, width, 3]``."""
    _check_image(image)
    mean, std = _lab_statistics(rgb_to_lab(image))
    return ReinhardReference(tuple(map(float, mean)), tuple(map(float, std)))


def reinhard_normalize(image: np.ndarray, reference: ReinhardReference) -> np.ndarray:
    """The image with each Lab channel shifted and scaled so that its stained pixels match ``reference``.

    Every pixel moves, background included; only the statistics are restricted to stained pixels.
    """
    _check_image(image)
    lab = rgb_to_lab(image)
    mean, std = _lab_statistics(lab)
    # A flat channel (std 0) has no spread to scale; keep it flat and only move its mean.
    scale = np.asarray(reference.lab_std) / np.maximum(std, 1e-6)
    return lab_to_rgb((lab - mean) * scale + np.asarray(reference.lab_mean))


# ------------------------------------------------------------------------------------------------------ Macenko
@dataclass(frozen=True)
class MacenkoReference:
    """Target dyes: their optical density colours and how much of each a strongly stained pixel holds."""

    stain_matrix: tuple[tuple[float, float], ...]  # [3 (R, G, B), 2 (haematoxylin-like, eosin-like)], unit columns
    max_concentrations: tuple[float, float]  # 99th percentile of each dye's amount over stained pixels

    def as_dict(self) -> dict:
        return {"stain_matrix": [list(row) for row in self.stain_matrix],
                "max_concentrations": list(self.max_concentrations)}

    @classmethod
    def from_dict(cls, stored: dict) -> MacenkoReference:
        rows = stored.get("stain_matrix") if isinstance(stored, dict) else None
        if not isinstance(rows, list | tuple) or len(rows) != 3:
            raise LeukolensError(f"stain reference: 'stain_matrix' must be 3 rows of 2 numbers, got {stored!r}")
        matrix = tuple(_floats({"stain_matrix row": row}, "stain_matrix row", 2) for row in rows)
        return cls(matrix, _floats(stored, "max_concentrations", 2))


def _optical_density(image: np.ndarray) -> np.ndarray:
    """``[pixels, 3]`` optical density; the +1 keeps black pixels finite."""
    return -np.log((image.reshape(-1, 3).astype(np.float64) + 1) / LIGHT_INTENSITY)


def _stains(density: np.ndarray, *, beta: float, alpha: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Stain matrix ``[3, 2]`` and 99th-percentile concentrations ``[2]``, or None when the image has too few
    stained pixels or only one dye colour."""
    stained = density[np.all(density >= beta, axis=1)]  # [pixels, 3]: dye absorbs in every channel
    if len(stained) < MIN_TISSUE_PIXELS:
        return None
    # Dye mixtures lie in a plane through the origin of OD space: the top two right singular vectors of the stained
    # pixels (eigenvectors of OD^T OD, a 3x3 problem however large the image).
    _, vectors = np.linalg.eigh(stained.T @ stained)
    plane = vectors[:, [2, 1]]  # [3, 2], largest first
    plane *= np.where(plane.sum(axis=0) < 0, -1, 1)  # eigenvector signs are arbitrary; dyes have positive OD
    projected = stained @ plane  # [pixels, 2]
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    # The extreme angles (robust percentiles) are the purest pixels of each dye.
    low, high = np.percentile(angles, [alpha, 100 - alpha])
    first = plane @ np.array([np.cos(low), np.sin(low)])
    second = plane @ np.array([np.cos(high), np.sin(high)])
    # Haematoxylin (blue-purple) absorbs red light more than eosin (pink) does: put it first.
    matrix = np.stack([first, second] if first[0] > second[0] else [second, first], axis=1)  # [3, 2]
    matrix /= np.linalg.norm(matrix, axis=0)
    if abs(matrix[:, 0] @ matrix[:, 1]) > 0.9999:
        return None  # one dye colour only: unmixing into two would be ill-posed
    # Over stained pixels rather than the whole image (as most implementations do), so that a crop's dye strength
    # does not depend on how much background surrounds the cell.
    concentrations = stained @ np.linalg.pinv(matrix).T  # [pixels, 2], least squares
    return matrix, np.percentile(concentrations, 99, axis=0)


def macenko_fit(image: np.ndarray, *, beta: float = 0.15, alpha: float = 1.0) -> MacenkoReference:
    """The Macenko reference of a ``uint8`` RGB image ``[height, width, 3]``.

    Args:
        image: the reference smear, with both dyes visible.
        beta: optical density below which a channel counts as unstained; pixels unstained in any channel are left
            out of the fit.
        alpha: percentile (and ``100 - alpha``) of the angles in the stain plane taken as the pure dyes.

    Raises:
        LeukolensError: the image has fewer than :data:`MIN_TISSUE_PIXELS` stained pixels, or a single dye colour.
    """
    _check_image(image)
    found = _stains(_optical_density(image), beta=beta, alpha=alpha)
    if found is None:
        raise LeukolensError("cannot fit a Macenko stain reference: the image has too few stained pixels or one dye")
    matrix, maxima = found
    return MacenkoReference(tuple(tuple(map(float, row)) for row in matrix), tuple(map(float, maxima)))


def macenko_normalize(
    image: np.ndarray, reference: MacenkoReference, *, beta: float = 0.15, alpha: float = 1.0
) -> np.ndarray:
    """The image re-stained with the reference's dyes at the reference's strength.

    An image whose own dyes cannot be estimated (fewer than :data:`MIN_TISSUE_PIXELS` stained pixels, e.g. a crop
    of bare background, or a single dye colour) is returned unchanged: there is nothing reliable to map.
    """
    _check_image(image)
    density = _optical_density(image)  # [pixels, 3]
    found = _stains(density, beta=beta, alpha=alpha)
    if found is None:
        return image
    matrix, maxima = found
    concentrations = density @ np.linalg.pinv(matrix).T  # [pixels, 2]
    concentrations *= np.asarray(reference.max_concentrations) / np.maximum(maxima, 1e-6)
    restained = LIGHT_INTENSITY * np.exp(-concentrations @ np.asarray(reference.stain_matrix).T)  # [pixels, 3]
    return np.clip(np.rint(restained), 0, 255).astype(np.uint8).reshape(image.shape)


# ------------------------------------------------------------------------------------------------------ choosing
def fit_reference(method: str, image: np.ndarray) -> dict:
    """The stored form (a plain dict) of ``method``'s reference fitted on ``image``; empty for ``none``."""
    _check_method(method)
    if method == "reinhard":
        return reinhard_fit(image).as_dict()
    if method == "macenko":
        return macenko_fit(image).as_dict()
    return {}


def normalizer_from_reference(stored: dict) -> Callable[[np.ndarray], np.ndarray]:
    """The normaliser a checkpoint stores as ``{"method": ..., "reference": {...}}``."""
    method = stored.get("method") if isinstance(stored, dict) else None
    _check_method(method)
    if method == "reinhard":
        reinhard = ReinhardReference.from_dict(stored.get("reference"))
        return lambda image: reinhard_normalize(image, reinhard)
    if method == "macenko":
        macenko = MacenkoReference.from_dict(stored.get("reference"))
        return lambda image: macenko_normalize(image, macenko)
    return _unchanged


def normalizer(method: str, reference_image: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function that normalises ``uint8`` RGB images towards ``reference_image`` by ``method``.

    Args:
        method: ``none`` (images pass through), ``reinhard`` or ``macenko``.
        reference_image: a typical well-stained smear or crop; unused for ``none``.

    Raises:
        LeukolensError: unknown method, or a reference image Macenko cannot fit.
    """
    return normalizer_from_reference({"method": method, "reference": fit_reference(method, reference_image)})


def _unchanged(image: np.ndarray) -> np.ndarray:
    return image


def _check_method(method: object) -> None:
    if method not in METHODS:
        raise LeukolensError(f"unknown stain normalisation {method!r}: use one of {', '.join(METHODS)}")


def _floats(stored: object, key: str, count: int) -> tuple[float, ...]:
    """``count`` numbers under ``key`` of a stored reference, or a LeukolensError saying what is wrong."""
    values = stored.get(key) if isinstance(stored, dict) else None
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != count:
        raise LeukolensError(f"stain reference: {key!r} must be {count} numbers, got {stored!r}")
    return numbers

"""Capture domains: stain, microscope, camera and magnification, as presets with ranges, and the image formation.

A domain is written ``MICROSCOPE:CAMERA:MAGNIFICATION[:STAIN]``, e.g. ``high-cost:high-end:100x`` or
``low-cost:phone:40x:Giemsa``; without a stain the slide's own stain is used. The presets follow LLD's capture set
(``shared/formats/lld.md``): a high-cost and a low-cost microscope, a high-end, a mid-level and a phone camera, at
100x, 40x and 10x. ``lld`` names LLD's twelve combinations (high-cost with high-end or phone camera, low-cost with
mid-level or phone camera, at each magnification).

Each preset gives *ranges*; every field draws its own values inside them, so no two captures are identical, as no
two real ones are. Image formation, in order: light through the stained smear (Beer-Lambert), uneven illumination
and vignetting, chromatic aberration and optical blur (microscope), then white balance, colour response, sensor
noise, sharpening and JPEG compression (camera).
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from leukolens.io.common import LeukolensError
from leukolens.synth.cells import MATERIALS

MAGNIFICATIONS = {"100x": 13.0, "40x": 5.2, "10x": 1.3}
"""Pixels per micrometre at each magnification: a red cell (7.5 um) is about 97 px across at 100x, as in BCCD's
fields (median red-cell box 97-102 px, see docs/synthetic.md); 40x and 10x scale with the objective."""

Range = tuple[float, float]


@dataclass(frozen=True)
class Stain:
    """A Romanowsky stain: the colour of each material at unit amount, and how much a slide may vary.

    Attributes:
        transmittance: material -> RGB fraction of light let through by a unit amount of it.
        intensity: range of the factor on each material's amount (how strongly a slide took the dye).
        hue: per-channel jitter of each material's absorbance (batch-to-batch shade).
    """

    name: str
    transmittance: dict[str, tuple[float, float, float]]
    intensity: Range = (0.85, 1.15)
    hue: float = 0.06


STAINS = {
    "Wright": Stain(
        "Wright",
        {
            "plasma": (0.985, 0.975, 0.985),
            "haemoglobin": (0.88, 0.70, 0.74),
            "chromatin": (0.46, 0.33, 0.72),
            "basophilic": (0.72, 0.80, 0.94),
            "acidophilic": (0.93, 0.82, 0.90),
            "eosinophilic": (0.96, 0.72, 0.64),
            "azurophilic": (0.42, 0.26, 0.52),
        },
    ),
    "Giemsa": Stain(
        "Giemsa",
        {
            "plasma": (0.98, 0.98, 0.99),
            "haemoglobin": (0.86, 0.74, 0.80),
            "chromatin": (0.44, 0.26, 0.58),
            "basophilic": (0.74, 0.78, 0.93),
            "acidophilic": (0.92, 0.84, 0.92),
            "eosinophilic": (0.94, 0.70, 0.66),
            "azurophilic": (0.48, 0.28, 0.55),
        },
    ),
    "May-Grunwald-Giemsa": Stain(
        "May-Grunwald-Giemsa",
        {
            "plasma": (0.99, 0.975, 0.97),
            "haemoglobin": (0.92, 0.70, 0.70),
            "chromatin": (0.42, 0.24, 0.62),
            "basophilic": (0.70, 0.76, 0.91),
            "acidophilic": (0.95, 0.84, 0.90),
            "eosinophilic": (0.97, 0.70, 0.58),
            "azurophilic": (0.44, 0.24, 0.50),
        },
    ),
}
STAIN_ALIASES = {"wright": "Wright", "giemsa": "Giemsa", "mgg": "May-Grunwald-Giemsa"}


@dataclass(frozen=True)
class Microscope:
    """Optics: blur (pixels at 100x), vignetting (darkening at the corners), lateral chromatic aberration (red and
    blue images scaled apart, pixels at the corner), illumination colour and unevenness, dust on the optics."""

    name: str
    blur: Range
    vignetting: Range
    chromatic_aberration: Range
    illumination: tuple[float, float, float]
    unevenness: Range
    dust: tuple[int, int]


MICROSCOPES = {
    "high-cost": Microscope("high-cost", (0.8, 1.3), (0.03, 0.10), (0.0, 0.6), (0.97, 0.96, 0.95), (0.0, 0.03), (0, 1)),
    "low-cost": Microscope("low-cost", (1.8, 3.0), (0.15, 0.35), (1.0, 2.5), (0.97, 0.92, 0.80), (0.03, 0.10), (1, 5)),
}


@dataclass(frozen=True)
class Camera:
    """Sensor and processing: exposure (share of full scale the bare slide reaches), noise (standard deviation of
    255), JPEG quality, white-balance gains of red and blue, saturation, gamma, and whether the camera sharpens
    its images (phones do)."""

    name: str
    exposure: Range
    noise: Range
    jpeg_quality: tuple[int, int]
    red_gain: Range
    blue_gain: Range
    saturation: Range
    gamma: Range
    sharpen: bool = False


CAMERAS = {
    "high-end": Camera(
        "high-end", (0.9, 1.0), (0.5, 1.5), (92, 97), (0.98, 1.03), (0.98, 1.04), (0.95, 1.1), (0.95, 1.05)
    ),
    # Dim, flat and a little green or blue: the look of BCCD's fields.
    "mid-level": Camera(
        "mid-level", (0.74, 0.92), (2.0, 4.0), (80, 90), (0.9, 1.0), (0.98, 1.15), (0.7, 0.95), (0.9, 1.15)
    ),
    "phone": Camera(
        "phone", (0.82, 1.0), (3.0, 6.0), (65, 82), (0.9, 1.08), (0.9, 1.1), (1.1, 1.4), (0.85, 1.0), sharpen=True
    ),
}
LLD_DOMAINS = tuple(
    f"{microscope}:{camera}:{magnification}"
    for microscope, cameras in (("high-cost", ("high-end", "phone")), ("low-cost", ("mid-level", "phone")))
    for camera in cameras
    for magnification in MAGNIFICATIONS
)
DEFAULT_DOMAIN = "high-cost:high-end:100x"


@dataclass(frozen=True)
class DomainSpec:
    """One capture setting; ``stain`` None means the slide's own stain."""

    microscope: str = "high-cost"
    camera: str = "high-end"
    magnification: str = "100x"
    stain: str | None = None

    def __post_init__(self) -> None:
        for value, known, what in (
            (self.microscope, MICROSCOPES, "microscope"),
            (self.camera, CAMERAS, "camera"),
            (self.magnification, MAGNIFICATIONS, "magnification"),
        ):
            if value not in known:
                raise LeukolensError(f"unknown {what} {value!r}: use one of {', '.join(known)}")
        if self.stain is not None:
            object.__setattr__(self, "stain", stain_name(self.stain))

    @classmethod
    def parse(cls, text: str) -> DomainSpec:
        """Read ``MICROSCOPE:CAMERA:MAGNIFICATION[:STAIN]``."""
        parts = [p.strip() for p in text.split(":")]
        if len(parts) not in (3, 4) or not all(parts):
            raise LeukolensError(
                f"domain {text!r} should read MICROSCOPE:CAMERA:MAGNIFICATION[:STAIN], e.g. {DEFAULT_DOMAIN} "
                f"(microscopes {', '.join(MICROSCOPES)}; cameras {', '.join(CAMERAS)}; "
                f"magnifications {', '.join(MAGNIFICATIONS)}; stains {', '.join(STAINS)})"
            )
        return cls(*parts)

    @property
    def px_per_um(self) -> float:
        return MAGNIFICATIONS[self.magnification]

    def slug(self, stain: str) -> str:
        """A short name for file names, e.g. ``hc-he-100x-wright``."""
        short = {"high-cost": "hc", "low-cost": "lc", "high-end": "he", "mid-level": "ml", "phone": "ph"}
        stain_short = {"Wright": "wright", "Giemsa": "giemsa", "May-Grunwald-Giemsa": "mgg"}[stain]
        return f"{short[self.microscope]}-{short[self.camera]}-{self.magnification}-{stain_short}"


def stain_name(text: str) -> str:
    """The canonical stain name for a user's spelling (``wright``, ``MGG``, ``May-Grunwald-Giemsa``...)."""
    name = STAIN_ALIASES.get(text.strip().lower(), text.strip())
    matches = [s for s in STAINS if s.lower() == name.lower()]
    if not matches:
        raise LeukolensError(f"unknown stain {text!r}: use one of {', '.join(STAINS)} (or wright, giemsa, mgg)")
    return matches[0]


def parse_domains(texts: list[str] | tuple[str, ...]) -> tuple[DomainSpec, ...]:
    """Domain specs from their texts; ``lld`` expands to :data:`LLD_DOMAINS`."""
    specs: list[DomainSpec] = []
    for text in texts:
        if isinstance(text, DomainSpec):
            specs.append(text)
        elif text.strip().lower() == "lld":
            specs.extend(DomainSpec.parse(t) for t in LLD_DOMAINS)
        else:
            specs.append(DomainSpec.parse(text))
    if not specs:
        raise LeukolensError("no domain given: name at least one, e.g. " + DEFAULT_DOMAIN)
    return tuple(specs)


def stain_absorbance(stain: str, rng: np.random.Generator) -> np.ndarray:
    """[materials, 3] absorbance of a unit amount of each material, with this slide's dye intensity and shade."""
    preset = STAINS[stain]
    absorbance = -np.log(np.array([preset.transmittance[m] for m in MATERIALS], np.float32))
    intensity = rng.uniform(*preset.intensity, size=(len(MATERIALS), 1))
    shade = 1 + rng.uniform(-preset.hue, preset.hue, size=(len(MATERIALS), 3))
    return (absorbance * intensity * shade).astype(np.float32)


# ------------------------------------------------------------------------------------------------ image formation
_NOISE_BANKS: dict[tuple[int, int], np.ndarray] = {}


def _noise_bank(height: int, width: int) -> np.ndarray:
    """[2h, 2w, 3] standard normal noise from a fixed seed, made once per process: a capture takes a random crop of
    it, which costs a slice instead of drawing a million Gaussian numbers per image."""
    if (height, width) not in _NOISE_BANKS:
        rng = np.random.default_rng(20240917)
        _NOISE_BANKS[(height, width)] = rng.standard_normal((2 * height, 2 * width, 3), dtype=np.float32)
    return _NOISE_BANKS[(height, width)]


@functools.lru_cache(maxsize=8)
def _light_maps(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x from -1 to 1 as [1, w], y likewise as [h, 1], and the squared distance from the centre, 1 at the corners,
    as [h, w] (cached: the same for every capture of this size)."""
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    return x, y, (x * x + y * y) / 2


def _scaled_about_centre(channel: Image.Image, scale: float) -> Image.Image:
    """A channel enlarged by ``scale`` about the image centre (lateral chromatic aberration)."""
    w, h = channel.size
    inverse = 1 / scale
    cx, cy = w / 2, h / 2
    return channel.transform(
        channel.size, Image.AFFINE, (inverse, 0, cx - inverse * cx, 0, inverse, cy - inverse * cy), Image.BILINEAR
    )


def _box_radius(sigma: float) -> float:
    """The radius of one box blur with the variance of a Gaussian of this sigma (one box pass costs a third of
    Pillow's three-pass Gaussian; at a few pixels the eye cannot tell them apart)."""
    return float((-1 + np.sqrt(1 + 12 * sigma * sigma)) / 2)


def capture(absorbance: np.ndarray, spec: DomainSpec, rng: np.random.Generator) -> bytes:
    """Photograph a drawn smear: optics, then camera, then JPEG.

    Args:
        absorbance: [h, w, 3] optical density of the smear in RGB; overwritten.
        spec: the microscope, camera and magnification.
        rng: draws this capture's values inside the presets' ranges.

    Returns:
        The JPEG file's bytes.
    """
    microscope, camera = MICROSCOPES[spec.microscope], CAMERAS[spec.camera]
    height, width = absorbance.shape[:2]

    # Light: a slightly off-white lamp, uneven across the field (an exponential ramp), darker towards the corners
    # (vignetting, exp(-v r^2)). As exponentials they fold into Beer-Lambert's: one exp over the image, in place.
    lamp = np.array(microscope.illumination, np.float32) * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    slope = rng.uniform(*microscope.unevenness)
    direction = rng.uniform(0, 2 * np.pi)
    ramp_x, ramp_y, r2 = _light_maps(height, width)
    log_light = (slope * np.cos(direction)) * ramp_x + (slope * np.sin(direction)) * ramp_y
    log_light = log_light - rng.uniform(*microscope.vignetting) * r2  # [h, w]
    exponent = absorbance  # the caller's canvas is used up here, to spare allocating three more images
    exponent -= log_light[..., None]
    exponent -= np.log(255 * lamp)
    np.negative(exponent, out=exponent)
    np.exp(exponent, out=exponent)
    np.minimum(exponent, 255, out=exponent)
    exponent += 0.5
    image = Image.fromarray(exponent.astype(np.uint8))

    aberration = rng.uniform(*microscope.chromatic_aberration)
    if aberration >= 0.5:  # below half a pixel at the corners it cannot be seen
        red, green, blue = image.split()
        scale = aberration / (np.hypot(width, height) / 2)
        # Red and blue are both enlarged (by different amounts) so that neither samples outside the image.
        image = Image.merge(
            "RGB", (_scaled_about_centre(red, 1 + scale), green, _scaled_about_centre(blue, 1 + 0.3 * scale))
        )
    # Optical blur in pixels shrinks a little at lower magnification: the objective's resolution falls more slowly
    # than its pixel scale.
    blur = rng.uniform(*microscope.blur) * {"100x": 1.0, "40x": 0.8, "10x": 0.6}[spec.magnification]
    image = image.filter(ImageFilter.BoxBlur(_box_radius(blur)))

    # Camera: white balance and saturation as one colour matrix, gamma as a lookup table (both in Pillow's C code).
    exposure = rng.uniform(*camera.exposure)
    gains = tuple(exposure * g for g in (rng.uniform(*camera.red_gain), 1.0, rng.uniform(*camera.blue_gain)))
    saturation = rng.uniform(*camera.saturation)
    rows = []
    for out in range(3):
        row = [(1 - saturation) / 3 * gains[c] + (saturation * gains[c] if c == out else 0) for c in range(3)]
        rows.extend([*row, 0.0])
    image = image.convert("RGB", tuple(rows))
    gamma = 1 / rng.uniform(*camera.gamma)
    table = [min(255, round(255 * (v / 255) ** gamma)) for v in range(256)]
    image = image.point(table * 3)

    # Sensor noise. A smear photograph is mostly bright, where shot noise is about constant: one sigma will do.
    bank = _noise_bank(height, width)
    oy, ox = int(rng.integers(height)), int(rng.integers(width))
    pixels = bank[oy : oy + height, ox : ox + width] * rng.uniform(*camera.noise)
    pixels += np.asarray(image, dtype=np.float32)
    pixels += 0.5
    np.clip(pixels, 0, 255, out=pixels)
    image = Image.fromarray(pixels.astype(np.uint8))
    if camera.sharpen:  # phones sharpen everything
        image = image.filter(ImageFilter.Kernel((3, 3), (0, -1, 0, -1, 8, -1, 0, -1, 0), scale=4))
    quality = int(rng.integers(camera.jpeg_quality[0], camera.jpeg_quality[1] + 1))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def add_dust(absorbance: np.ndarray, spec: DomainSpec, rng: np.random.Generator) -> None:
    """Out-of-focus dust on the optics: a few faint grey blurs, the same wherever the slide is."""
    low, high = MICROSCOPES[spec.microscope].dust
    height, width = absorbance.shape[:2]
    for _ in range(int(rng.integers(low, high + 1))):
        radius = rng.uniform(0.01, 0.04) * width
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        x0, x1 = int(max(cx - 2 * radius, 0)), int(min(cx + 2 * radius, width))
        y0, y1 = int(max(cy - 2 * radius, 0)), int(min(cy + 2 * radius, height))
        if x0 >= x1 or y0 >= y1:
            continue
        y, x = np.ogrid[y0:y1, x0:x1]
        spot = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / radius**2)).astype(np.float32)
        absorbance[y0:y1, x0:x1] += spot[..., None] * rng.uniform(0.03, 0.08)

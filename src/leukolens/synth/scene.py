"""Drawing primitives for synthetic smears: soft shapes, smooth noise and additive stamping, all vectorised numpy.

A smear is drawn in optical density (absorbance): a stained object absorbs light, and overlapping objects absorb
more, so drawing is adding a sprite's density into the canvas. The camera sees ``illumination * exp(-density)``
(Beer-Lambert), which is what makes two overlapping red cells darker where they overlap, as on a real slide.
Coordinates are pixels, ``x`` to the right and ``y`` down, unless a name says ``_um`` (micrometres).
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image


def pixel_grid(height: int, width: int, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre offsets from (cx, cy): ``x`` of shape [1, width] and ``y`` of shape [height, 1]."""
    x = np.arange(width, dtype=np.float32)[None, :] + 0.5 - cx
    y = np.arange(height, dtype=np.float32)[:, None] + 0.5 - cy
    return x, y


def soft_inside(signed_distance: np.ndarray, edge: float = 1.0) -> np.ndarray:
    """1 inside a shape, 0 outside, a linear ramp ``edge`` pixels wide across the border (anti-aliasing)."""
    return np.clip(0.5 - signed_distance / max(edge, 1e-3), 0.0, 1.0)


def ellipse_distance(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float = 0.0
) -> np.ndarray:
    """Approximate signed distance in pixels to an ellipse with semi-axes ``a``, ``b`` rotated by ``angle``.

    Exact for circles; for the mild eccentricities of cells the error is far below a pixel near the border, which is
    all that anti-aliasing needs.
    """
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    return (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * min(a, b)


ANGLE_BINS = 1024
_POLAR_HALF = 400  # the shared polar grid covers sprites up to 800 px (a 22 um cell at 13 px/um needs ~330)


@functools.lru_cache(maxsize=1)
def _polar_table() -> tuple[np.ndarray, np.ndarray]:
    offsets = np.arange(2 * _POLAR_HALF, dtype=np.float32) + 0.5 - _POLAR_HALF
    radius = np.sqrt(offsets[None, :] ** 2 + offsets[:, None] ** 2)
    angle = np.arctan2(offsets[:, None], offsets[None, :])
    bins = ((angle + np.pi) * (ANGLE_BINS / (2 * np.pi))).astype(np.int32) % ANGLE_BINS
    return radius, bins


def polar_grid(size: int, shift_x: int = 0, shift_y: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distance and angle bin of every pixel of a ``size`` x ``size`` sprite (``size`` even) from the point
    (size / 2 + shift_x, size / 2 + shift_y): [size, size] each.

    Cut from one grid made once per process: an arctangent over every pixel of every cell would cost more than the
    rest of drawing the outline.
    """
    half = size // 2
    x0, y0 = _POLAR_HALF - half - shift_x, _POLAR_HALF - half - shift_y
    if min(x0, y0) >= 0 and max(x0, y0) + size <= 2 * _POLAR_HALF:
        radius, bins = _polar_table()
        return radius[y0 : y0 + size, x0 : x0 + size], bins[y0 : y0 + size, x0 : x0 + size]
    x, y = pixel_grid(size, size, half + shift_x, half + shift_y)
    bins = ((np.arctan2(y, x) + np.pi) * (ANGLE_BINS / (2 * np.pi))).astype(np.int32) % ANGLE_BINS
    return np.sqrt(x * x + y * y), bins


def wobbly_distance(polar: tuple[np.ndarray, np.ndarray], radius: float, harmonics: np.ndarray) -> np.ndarray:
    """Signed distance to a round outline whose radius varies with the angle.

    Args:
        polar: distance and angle bin of every pixel from the outline's centre (:func:`polar_grid`).
        radius: mean radius in pixels.
        harmonics: [k, 2] amplitude (fraction of the radius) and phase of harmonic k+2 of r(theta); low harmonics
            give ovals and dents, higher ones a bumpy outline.
    """
    distance, bins = polar
    theta = (np.arange(ANGLE_BINS, dtype=np.float32) + 0.5) * (2 * np.pi / ANGLE_BINS) - np.pi
    scale = np.ones(ANGLE_BINS, np.float32)
    for k, (amplitude, phase) in enumerate(harmonics, start=2):
        scale += np.float32(amplitude) * np.cos(k * theta + np.float32(phase))
    return distance - radius * scale[bins]  # r(theta) looked up per pixel from its angle bin


def segment_distance(x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]) -> np.ndarray:
    """Unsigned distance in pixels to the segment p0-p1 (rods, chromatin strands)."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = max(dx * dx + dy * dy, 1e-6)
    t = np.clip(((x - p0[0]) * dx + (y - p0[1]) * dy) / length2, 0.0, 1.0)
    return np.sqrt((x - p0[0] - t * dx) ** 2 + (y - p0[1] - t * dy) ** 2)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], feature: float) -> np.ndarray:
    """Smooth random texture with about unit standard deviation and blobs ``feature`` pixels across.

    A coarse grid of Gaussian values is enlarged with bicubic interpolation: no per-pixel loops and no filtering.
    """
    height, width = shape
    feature = max(feature, 1.0)
    coarse = rng.standard_normal((int(height / feature) + 2, int(width / feature) + 2), dtype=np.float32)
    if feature <= 1.0:
        return coarse[:height, :width]
    image = Image.fromarray(coarse, mode="F").resize((width, height), Image.BICUBIC)
    return np.asarray(image, dtype=np.float32) * 1.6  # bicubic enlargement loses some variance; bring it back


def stamp(canvas: np.ndarray, sprite: np.ndarray, x0: int, y0: int) -> None:
    """Add ``sprite`` into ``canvas`` with its top-left corner at (x0, y0); parts outside the canvas are cut off."""
    height, width = canvas.shape[:2]
    sh, sw = sprite.shape[:2]
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + sw, width), min(y0 + sh, height)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    canvas[cy0:cy1, cx0:cx1] += sprite[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]


def blob_kernel(radius: float) -> np.ndarray:
    """A soft round dot of the given radius in pixels, peak 1: one granule, nucleolus rim or platelet granule."""
    half = int(np.ceil(radius + 1.5))
    x, y = pixel_grid(2 * half + 1, 2 * half + 1, half + 0.5, half + 0.5)
    return soft_inside(np.sqrt(x * x + y * y) - radius, edge=max(1.0, radius * 0.6))


def stamp_points(canvas: np.ndarray, kernel: np.ndarray, xs: np.ndarray, ys: np.ndarray, weights: np.ndarray) -> None:
    """Add ``kernel`` * weight centred at each point (granules) into a 2-D canvas, all points at once.

    Every (point, kernel pixel) pair becomes one entry of a weighted histogram over the canvas's pixels, so hundreds
    of granules cost one ``bincount`` instead of hundreds of slice additions.
    """
    if not len(xs):
        return
    height, width = canvas.shape
    half = kernel.shape[0] // 2
    offsets = np.arange(-half, half + 1)
    px = np.round(xs).astype(int)[:, None, None] + offsets[None, None, :]  # [points, 1, k]
    py = np.round(ys).astype(int)[:, None, None] + offsets[None, :, None]  # [points, k, 1]
    values = np.asarray(weights, np.float32)[:, None, None] * kernel[None]  # [points, k, k]
    px, py = np.broadcast_to(px, values.shape), np.broadcast_to(py, values.shape)
    inside = (px >= 0) & (px < width) & (py >= 0) & (py < height)
    flat = py[inside] * width + px[inside]
    canvas += np.bincount(flat, weights=values[inside], minlength=height * width).reshape(height, width)


def sample_in_disc(rng: np.random.Generator, n: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points spread uniformly over a disc of the given radius around the origin."""
    r = radius * np.sqrt(rng.random(n))
    theta = rng.random(n) * 2 * np.pi
    return r * np.cos(theta), r * np.sin(theta)

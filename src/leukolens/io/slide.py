"""Whole-slide images read region by region, never whole into memory.

    >>> with open_slide("slide.tif") as slide:
    ...     slide.info.width, slide.info.height, slide.info.microns_per_pixel
    ...     window = slide.read_region(4096, 8192, 2048, 2048)      # uint8 [2048, 2048, 3]

Three readers behind one :class:`Slide`:

- ``tifffile`` for TIFF and BigTIFF, tiled or stripped, pyramidal or not (SVS, NDPI and OME-TIFF are TIFF too): a
  region decodes only the tiles (or strips) it covers, straight from their byte ranges in the file
  (``TiffPage.dataoffsets`` and ``TiffPage.decode``); decoded segments are kept in a small cache bounded in bytes,
  since overlapping windows and neighbouring cells read the same tiles again. Uncompressed strips, whose rows lie
  one after the other in the file, are not decoded at all: a region reads only its own rows' bytes, so a slide
  stored in one huge strip costs no more than a tiled one. A compressed strip (or tile) must be decoded whole:
  over :data:`MAX_SEGMENT_BYTES` the file is refused with the advice to tile it. ``imagecodecs`` decodes JPEG,
  LZW, JPEG 2000 and WebP tiles; zlib and LZMA need nothing more. Both come with the ``slides`` extra
  (``pip install leukolens[slides]``) and are imported only when a slide is opened; a codec that is missing is
  named when the slide is opened.
- ``openslide`` for the formats OpenSlide reads (MIRAX, Hamamatsu, Leica, Ventana, ...), when it is importable.
- Pillow for a large JPEG, PNG or BMP: decoded once (up to :data:`MAX_DECODED_PIXELS`), then cut like the others.

A tile that cannot be decoded (a corrupt or truncated file) raises :class:`SlideReadError` naming the tile; a slide
opened with ``skip_damaged=True`` fills it with :data:`BLANK` instead and records it once in :attr:`Slide.damaged`,
so the rest of the slide is still read (:func:`too_damaged` says when so much is lost that nothing can be
concluded). Running out of memory is never taken for a damaged tile. Microns per pixel come from the file when it
says so: an Aperio ``MPP``, an OME ``PhysicalSizeX``, OpenSlide's ``openslide.mpp-x``, or the TIFF resolution tags
in centimetres or inches when they give a microscope's scale (:data:`MPP_RANGE`; a scanner's 72 dpi is no scale).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from leukolens.errors import LeukolensError

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".svs", ".ndpi")
OPENSLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
PILLOW_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MAX_DECODED_PIXELS = 600_000_000
"""A JPEG, PNG or BMP slide is decoded whole once (3 bytes a pixel): larger ones must be converted to a tiled TIFF."""
MIN_SLIDE_SIDE = 1024
"""A JPEG, PNG or BMP over a field's limits is taken for a slide only when both its sides are at least this long."""
MPP_RANGE = (0.02, 5.0)
"""Microns per pixel a microscope or slide scanner gives (100x oil about 0.05-0.1, 20x about 0.5)."""
BLANK = (255, 255, 255)
"""What a damaged or missing tile reads as: bare glass."""
CACHE_BYTES = 64 * 2**20
"""Decoded tiles kept for the next region (bytes): enough for the tiles two neighbouring windows of a row share."""
MAX_SEGMENT_BYTES = 512 * 2**20
"""Largest compressed strip or tile decoded (bytes once decoded): a segment is decoded whole, and held in the cache."""
DAMAGED_SHARE = 0.5
"""More than this share of a slide's tiles unreadable: the file is damaged, and no count is given from the rest."""
FIELD_MAX_PIXELS = 40_000_000  # predict.fields.MAX_PIXELS: larger images are no microscope field
FIELD_MAX_SIDE = 8192


class SlideReadError(LeukolensError):
    """A region of a slide that cannot be read (a damaged tile, an unsupported layout)."""


@dataclass(frozen=True)
class SlideInfo:
    """What a slide file says about itself.

    Attributes:
        path: the file.
        width: width of the full-resolution level (pixels).
        height: height of the full-resolution level.
        levels: (width, height) of each level, full resolution first (one level: no pyramid).
        microns_per_pixel: the full-resolution level's scale when the file says so, else None.
        reader: ``"tifffile"``, ``"openslide"`` or ``"pillow"``.
        tiled: whether the full-resolution level is stored in tiles (a stripped TIFF or a decoded image: False).
    """

    path: Path
    width: int
    height: int
    levels: tuple[tuple[int, int], ...]
    microns_per_pixel: float | None
    reader: str
    tiled: bool = False


@dataclass(frozen=True)
class DamagedTile:
    """A stored tile (or strip) that could not be decoded; its area read as :data:`BLANK`."""

    level: int
    x: int
    y: int
    width: int
    height: int
    reason: str


class Slide:
    """An open slide: :meth:`read_region` in any level's pixels; a context manager that closes the file."""

    info: SlideInfo

    def __init__(self, info: SlideInfo, *, skip_damaged: bool = False):
        self.info = info
        self.skip_damaged = skip_damaged
        self.damaged: list[DamagedTile] = []

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    def read_region(self, x: int, y: int, width: int, height: int, *, level: int = 0) -> np.ndarray:
        """The region ``uint8 [height, width, 3]`` whose top-left corner is (``x``, ``y``) in ``level``'s pixels.
        Parts outside the slide read as :data:`BLANK`.

        Raises:
            SlideReadError: a tile of the region cannot be decoded (unless ``skip_damaged``).
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"a region needs a positive size, got {width}x{height}")
        if not 0 <= level < len(self.info.levels):
            raise ValueError(f"{self.info.path}: no level {level} (the slide has {len(self.info.levels)})")
        level_width, level_height = self.info.levels[level]
        region = np.empty((height, width, 3), np.uint8)
        region[:] = BLANK
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, level_width), min(y + height, level_height)
        if x1 > x0 and y1 > y0:
            region[y0 - y : y1 - y, x0 - x : x1 - x] = self._read(x0, y0, x1 - x0, y1 - y0, level)
        return region

    def crop(self, box: Sequence[int]) -> Image.Image:
        """``Image.crop`` of the full-resolution level: (left, top, right, bottom) -> an RGB image (what the report
        cuts a cell from)."""
        left, top, right, bottom = (int(v) for v in box)
        return Image.fromarray(self.read_region(left, top, max(right - left, 1), max(bottom - top, 1)))

    def segments(self, level: int = 0) -> int | None:
        """How many tiles (or strips) ``level`` is stored in, when the file is stored so (else None)."""
        return None

    def _read(self, x: int, y: int, width: int, height: int, level: int) -> np.ndarray:
        raise NotImplementedError

    def _damaged(self, tile: DamagedTile) -> None:
        if not self.skip_damaged:
            raise SlideReadError(
                f"{self.info.path}: tile at ({tile.x}, {tile.y}) of level {tile.level} cannot be read ({tile.reason})"
            )
        if all((d.level, d.x, d.y) != (tile.level, tile.x, tile.y) for d in self.damaged):
            self.damaged.append(tile)

    def close(self) -> None:
        pass

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *_) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------------ tifffile
def _tifffile():
    try:
        import tifffile
    except ImportError:
        raise LeukolensError(
            "whole-slide TIFFs need tifffile: pip install 'leukolens[slides]' (tifffile and imagecodecs)"
        ) from None
    return tifffile


class _SegmentCache:
    """Decoded tiles by (level, index), least recently used dropped first once over ``limit`` bytes."""

    def __init__(self, limit: int):
        self.limit, self.size = limit, 0
        self.items: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def get(self, key):
        found = self.items.get(key)
        if found is not None:
            self.items.move_to_end(key)
        return found

    def put(self, key, value: np.ndarray) -> None:
        self.items[key] = value
        self.size += value.nbytes
        while self.size > self.limit and len(self.items) > 1:
            _, dropped = self.items.popitem(last=False)
            self.size -= dropped.nbytes


class TiffSlide(Slide):
    """A TIFF or BigTIFF read tile by tile (or strip by strip) with tifffile."""

    def __init__(self, path: Path, *, skip_damaged: bool = False, cache_bytes: int = CACHE_BYTES):
        tifffile = _tifffile()
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            self._pages = [level.keyframe for level in series.levels]
        except Exception as error:  # tifffile raises many kinds on a broken file
            raise LeukolensError(f"{path}: cannot read as a TIFF ({type(error).__name__}: {error})") from None
        for page in self._pages:
            _check_page(path, page)
            _check_decodable(path, page, tifffile)
        levels = tuple((int(p.imagewidth), int(p.imagelength)) for p in self._pages)
        info = SlideInfo(
            Path(path), *levels[0], levels=levels, microns_per_pixel=_tiff_mpp(self._tif, self._pages[0]),
            reader="tifffile", tiled=bool(self._pages[0].is_tiled),
        )
        super().__init__(info, skip_damaged=skip_damaged)
        self._cache = _SegmentCache(cache_bytes)

    def segments(self, level: int = 0) -> int | None:
        page = self._pages[level]
        planes = int(page.samplesperpixel) if page.planarconfig == 2 else 1
        return max(1, len(page.dataoffsets) // planes)

    def _read(self, x: int, y: int, width: int, height: int, level: int) -> np.ndarray:
        page = self._pages[level]
        if _raw_strips(page):
            return self._read_rows(page, level, x, y, width, height)
        if page.is_tiled:
            seg_w, seg_h = int(page.tilewidth), int(page.tilelength)
        else:
            seg_w, seg_h = int(page.imagewidth), min(int(page.rowsperstrip or page.imagelength), int(page.imagelength))
        columns = math.ceil(page.imagewidth / seg_w)
        per_plane = columns * math.ceil(page.imagelength / seg_h)
        out = np.empty((height, width, 3), np.uint8)
        for row in range(y // seg_h, (y + height - 1) // seg_h + 1):
            for column in range(x // seg_w, (x + width - 1) // seg_w + 1):
                segment = self._segment(page, level, row * columns + column, per_plane, (seg_w, seg_h))
                sx, sy = column * seg_w, row * seg_h
                ax0, ay0 = max(x, sx), max(y, sy)
                ax1, ay1 = min(x + width, sx + seg_w, page.imagewidth), min(y + height, sy + seg_h, page.imagelength)
                out[ay0 - y : ay1 - y, ax0 - x : ax1 - x] = segment[ay0 - sy : ay1 - sy, ax0 - sx : ax1 - sx]
        return out

    def _segment(self, page, level: int, index: int, per_plane: int, size: tuple[int, int]) -> np.ndarray:
        """One tile (or strip) as ``uint8 [seg_h, seg_w, 3]``, from the cache or decoded."""
        found = self._cache.get((level, index))
        if found is not None:
            return found
        seg_w, seg_h = size
        planes = int(page.samplesperpixel) if page.planarconfig == 2 else 1
        parts = []
        try:
            for plane in range(planes):
                i = index + plane * per_plane
                offset, count = page.dataoffsets[i], page.databytecounts[i]
                if not count:  # a tile never written (sparse file): glass
                    parts = None
                    break
                self._tif.filehandle.seek(offset)
                data = self._tif.filehandle.read(count)
                if len(data) < count:
                    raise ValueError(f"file ends {count - len(data)} bytes early")
                decoded, _, _ = page.decode(data, i, jpegtables=page.jpegtables)
                parts.append(np.asarray(decoded).reshape(-1, *np.asarray(decoded).shape[-3:])[0])
            segment = _to_rgb(np.concatenate(parts, axis=-1), page) if parts is not None else None
        except MemoryError:  # the machine, not the file: never read as glass
            raise
        except Exception as error:  # codecs raise their own kinds on damaged data
            if "imagecodecs" in str(error):  # a codec missing here, not a damaged tile
                raise LeukolensError(_codec_message(self.info.path, page, error)) from None
            columns = math.ceil(page.imagewidth / seg_w)
            row, column = divmod(index, columns)
            self._damaged(DamagedTile(level, column * seg_w, row * seg_h, seg_w, seg_h,
                                      f"{type(error).__name__}: {error}"))
            segment = None
        if segment is None:
            segment = np.empty((seg_h, seg_w, 3), np.uint8)
            segment[:] = BLANK
        elif segment.shape[:2] != (seg_h, seg_w):  # the last strip is shorter; pad so every segment has one shape
            full = np.empty((seg_h, seg_w, 3), np.uint8)
            full[:] = BLANK
            full[: segment.shape[0], : segment.shape[1]] = segment[:seg_h, :seg_w]
            segment = full
        self._cache.put((level, index), segment)
        return segment

    def _read_rows(self, page, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """A region of uncompressed strips read straight from the file: a row of pixels lies at its strip's offset
        plus the rows before it, so only the region's own bytes are read however large the strips are."""
        dtype = np.dtype(page.dtype).newbyteorder(self._tif.byteorder)
        samples = int(page.samplesperpixel)
        planes = samples if page.planarconfig == 2 else 1
        pixel = dtype.itemsize * (samples // planes)
        row_bytes = int(page.imagewidth) * pixel
        per_strip = min(int(page.rowsperstrip or page.imagelength), int(page.imagelength))
        per_plane = math.ceil(page.imagelength / per_strip)
        out = np.empty((height, width, samples), dtype)
        blank = np.zeros(height, bool)
        handle = self._tif.filehandle
        whole_rows = x == 0 and width == page.imagewidth  # one read for all the region's rows of a strip
        for plane in range(planes):
            channels = slice(plane, plane + 1) if planes > 1 else slice(None)
            for strip in range(y // per_strip, (y + height - 1) // per_strip + 1):
                i = strip + plane * per_plane
                offset, count = int(page.dataoffsets[i]), int(page.databytecounts[i])
                r0, r1 = max(y, strip * per_strip), min(y + height, (strip + 1) * per_strip)
                runs = [(r0, r1)] if whole_rows else [(r, r + 1) for r in range(r0, r1)]
                for a, b in runs:
                    start = (a - strip * per_strip) * row_bytes + x * pixel
                    size = (b - a - 1) * row_bytes + width * pixel  # whole rows: (b - a) * row_bytes
                    data = b""
                    if count:  # a strip never written (sparse file): glass
                        handle.seek(offset + start)
                        data = handle.read(min(size, max(count - start, 0)))
                    if len(data) < size:
                        if count:
                            missing = f"strip holds {count} bytes, its rows need {start + size}"
                            self._damaged(DamagedTile(level, 0, strip * per_strip, int(page.imagewidth), per_strip,
                                                      f"ValueError: {missing}"))
                        blank[a - y : b - y] = True
                        continue
                    out[a - y : b - y, :, channels] = np.frombuffer(data, dtype).reshape(b - a, width, -1)
        region = _to_rgb(out.astype(dtype.newbyteorder("="), copy=False), page)
        region[blank] = BLANK
        return region

    def close(self) -> None:
        self._tif.close()


def _raw_strips(page) -> bool:
    """Whether a page's full-resolution pixels are uncompressed strips of whole bytes, read row by row."""
    return (
        not page.is_tiled and int(page.compression) == 1 and int(page.bitspersample) in (8, 16)
        and int(page.photometric) in (0, 1, 2) and int(page.fillorder) == 1 and not page.is_subsampled
    )


def _check_decodable(path: Path, page, tifffile) -> None:
    """Refuse a slide whose compression no installed codec decodes (else every tile would read as damaged), and one
    whose compressed segments are too large to decode whole."""
    if _raw_strips(page):
        return
    if int(page.compression) != 1:
        try:
            tifffile.TIFF.DECOMPRESSORS[page.compression]
            if page.predictor != 1 and page.compression not in tifffile.TIFF.IMAGE_COMPRESSIONS:
                tifffile.TIFF.UNPREDICTORS[page.predictor]
        except KeyError as error:
            if "imagecodecs" in str(error):
                raise LeukolensError(_codec_message(path, page, error)) from None
            raise LeukolensError(f"{path}: compression {_compression(page)} is not read ({error})") from None
    if page.is_tiled:
        seg_w, seg_h = int(page.tilewidth), int(page.tilelength)
    else:
        seg_w, seg_h = int(page.imagewidth), min(int(page.rowsperstrip or page.imagelength), int(page.imagelength))
    size = seg_w * seg_h * int(page.samplesperpixel) * np.dtype(page.dtype).itemsize
    if size > MAX_SEGMENT_BYTES:
        raise LeukolensError(
            f"{path}: stored in {'tiles' if page.is_tiled else 'strips'} of {seg_w}x{seg_h} px ({size / 2**20:.0f} MB "
            f"decoded), each decoded whole: more than {MAX_SEGMENT_BYTES // 2**20} MB; convert it to a tiled TIFF "
            "(e.g. vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg)"
        )


def _compression(page) -> str:
    return getattr(page.compression, "name", str(page.compression))


def _codec_message(path: Path, page, error: Exception) -> str:
    said = error.args[0] if error.args else error  # a KeyError's str() quotes its message
    return (f"{path}: its pixels are compressed with {_compression(page)}, which needs the imagecodecs package with "
            f"that codec ({said}): pip install 'leukolens[slides]' (tifffile and imagecodecs)")


def too_damaged(slide: Slide, *, share: float = DAMAGED_SHARE) -> str | None:
    """Why a slide read with ``skip_damaged`` cannot be counted: more than ``share`` of its full-resolution tiles (of
    those it is stored in; tiles not read yet are not known to be damaged) could not be decoded. None when it can."""
    total = slide.segments(0)
    damaged = [d for d in slide.damaged if d.level == 0]
    if not total or len(damaged) <= share * total:
        return None
    return (f"{slide.info.path}: {len(damaged)} of its {total} tiles cannot be read (first: {damaged[0].reason}): the "
            "file is damaged or truncated; nothing is concluded from the rest")


def _check_page(path: Path, page) -> None:
    """Refuse layouts this reader does not decode, with the reason."""
    if page.imagedepth > 1:
        raise LeukolensError(f"{path}: a volume ({page.imagedepth} planes deep), not a slide")
    if page.dtype is None or np.dtype(page.dtype) not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise LeukolensError(f"{path}: {page.dtype} samples; a slide must hold 8- or 16-bit colours")
    photometric = int(page.photometric)
    if photometric not in (0, 1, 2, 6):  # min-is-white, min-is-black, RGB, YCbCr (JPEG tiles)
        raise LeukolensError(f"{path}: photometric interpretation {page.photometric!r} is not read as a slide")


def _to_rgb(segment: np.ndarray, page) -> np.ndarray:
    """A decoded segment ``[h, w, samples]`` as ``uint8 [h, w, 3]``: 16 bits to 8, grey to RGB, extra samples
    (alpha) dropped."""
    if segment.dtype == np.uint16:
        segment = (segment >> 8).astype(np.uint8)
    if segment.ndim == 2:
        segment = segment[..., None]
    if segment.shape[-1] < 3:
        grey = segment[..., :1]
        if int(page.photometric) == 0:  # min-is-white
            grey = 255 - grey
        segment = np.repeat(grey, 3, axis=-1)
    return np.ascontiguousarray(segment[..., :3], dtype=np.uint8)


def _plausible(mpp: float | None) -> float | None:
    return mpp if mpp is not None and MPP_RANGE[0] <= mpp <= MPP_RANGE[1] else None


def _tiff_mpp(tif, page) -> float | None:
    """Microns per pixel of the full-resolution page, when the file says so."""
    description = str(page.description or "")
    for pattern in (r"\bMPP\s*=\s*([0-9.]+)", r'PhysicalSizeX="([0-9.eE+-]+)"'):
        found = re.search(pattern, description)
        if found:
            try:
                if pattern.startswith("Phys") and re.search(r'PhysicalSizeXUnit="(?!µm|um)', description):
                    continue  # an OME size in another unit than the default micrometre
                return _plausible(float(found.group(1)))
            except ValueError:
                continue
    tags = page.tags
    resolution, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
    if resolution is None or unit is None:
        return None
    numerator, denominator = resolution.value if isinstance(resolution.value, tuple) else (resolution.value, 1)
    if not numerator or not denominator:
        return None
    per_unit = numerator / denominator  # pixels per inch or per centimetre
    microns = {2: 25_400.0, 3: 10_000.0}.get(int(unit.value))
    return _plausible(microns / per_unit) if microns else None


# ------------------------------------------------------------------------------------------------------ openslide
class OpenSlideSlide(Slide):
    """A slide in a format OpenSlide reads (when the ``openslide`` package is importable)."""

    def __init__(self, path: Path, *, skip_damaged: bool = False):
        import openslide

        try:
            self._slide = openslide.OpenSlide(str(path))
        except Exception as error:
            raise LeukolensError(f"{path}: cannot read with OpenSlide ({error})") from None
        properties = self._slide.properties
        try:
            mpp = _plausible(float(properties.get(openslide.PROPERTY_NAME_MPP_X, "")))
        except ValueError:
            mpp = None
        levels = tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)
        super().__init__(SlideInfo(Path(path), *levels[0], levels=levels, microns_per_pixel=mpp, reader="openslide",
                                   tiled=True), skip_damaged=skip_damaged)

    def _read(self, x: int, y: int, width: int, height: int, level: int) -> np.ndarray:
        downsample = self._slide.level_downsamples[level]
        try:
            rgba = self._slide.read_region((round(x * downsample), round(y * downsample)), level, (width, height))
        except Exception as error:  # OpenSlide cannot go on after a read error: no tile to skip
            raise SlideReadError(f"{self.info.path}: region ({x}, {y}) {width}x{height} unreadable ({error})") from None
        background = Image.new("RGB", rgba.size, BLANK)
        background.paste(rgba, mask=rgba.getchannel("A"))  # transparent parts (outside the scanned area): glass
        return np.asarray(background)

    def close(self) -> None:
        self._slide.close()


# ------------------------------------------------------------------------------------------------------ pillow
class DecodedSlide(Slide):
    """A large JPEG, PNG or BMP decoded once, then cut in regions like a tiled slide."""

    def __init__(self, path: Path, *, skip_damaged: bool = False):
        limit = Image.MAX_IMAGE_PIXELS
        try:
            Image.MAX_IMAGE_PIXELS = MAX_DECODED_PIXELS  # a slide is far over Pillow's decompression-bomb limit
            with Image.open(path) as image:
                if image.width * image.height > MAX_DECODED_PIXELS:
                    raise LeukolensError(
                        f"{path}: {image.width}x{image.height} px is more than {MAX_DECODED_PIXELS // 1_000_000} "
                        "megapixels to decode at once; convert it to a tiled TIFF"
                    )
                image.load()
                self._pixels = np.asarray(image.convert("RGB"))
                dpi = image.info.get("dpi")
        except LeukolensError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise LeukolensError(f"{path}: cannot read image ({error})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        height, width = self._pixels.shape[:2]
        mpp = _plausible(25_400.0 / float(dpi[0])) if dpi and dpi[0] else None
        super().__init__(SlideInfo(Path(path), width, height, levels=((width, height),), microns_per_pixel=mpp,
                                   reader="pillow"), skip_damaged=skip_damaged)

    def _read(self, x: int, y: int, width: int, height: int, level: int) -> np.ndarray:
        return self._pixels[y : y + height, x : x + width]


# ------------------------------------------------------------------------------------------------------ opening
def openslide_available() -> bool:
    try:
        import openslide  # noqa: F401
    except (ImportError, OSError):  # OSError: the Python package without its shared library
        return False
    return True


def open_slide(path: str | Path, *, skip_damaged: bool = False) -> Slide:
    """Open a slide with the reader its format needs (see the module docstring).

    Raises:
        LeukolensError: no such file, a format no installed reader knows, or a broken file.
    """
    path = Path(path)
    if not path.is_file():
        raise LeukolensError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in OPENSLIDE_SUFFIXES and openslide_available():
        return OpenSlideSlide(path, skip_damaged=skip_damaged)
    if suffix in TIFF_SUFFIXES:
        return TiffSlide(path, skip_damaged=skip_damaged)
    if suffix in PILLOW_SUFFIXES:
        return DecodedSlide(path, skip_damaged=skip_damaged)
    if suffix in OPENSLIDE_SUFFIXES:
        raise LeukolensError(f"{path}: this format needs OpenSlide: pip install openslide-python openslide-bin")
    raise LeukolensError(f"{path}: not a slide format leukolens reads ({', '.join(TIFF_SUFFIXES + PILLOW_SUFFIXES)})")


def is_slide(path: str | Path) -> bool:
    """Whether an input is a whole slide rather than a microscope field: a TIFF that is pyramidal or larger than a
    field (at most 8192 px a side and 40 megapixels); a format only OpenSlide reads; a JPEG, PNG or BMP over a
    field's limits whose sides are both at least :data:`MIN_SLIDE_SIDE`. A TIFF within a field's limits is a field
    however it is stored (a camera's 640x480 field saved in tiles too). Only the file's header is read; a file that
    cannot be read at all is no slide (it is skipped as a field, with its reason)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in OPENSLIDE_SUFFIXES and suffix not in TIFF_SUFFIXES:
        return True
    if suffix in TIFF_SUFFIXES:
        try:
            import tifffile
        except ImportError:
            tifffile = None
        if tifffile is not None:
            try:
                with tifffile.TiffFile(path) as tif:
                    series = tif.series[0]
                    page = series.levels[0].keyframe
                    width, height = int(page.imagewidth), int(page.imagelength)
                    return len(series.levels) > 1 or _over_field(width, height)
            except Exception:  # not a TIFF tifffile reads: the field path reports it
                return False
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # unreadable, or over Pillow's own bomb limit (header read fails): not a field either
        return suffix in TIFF_SUFFIXES + PILLOW_SUFFIXES and _header_over_limit(path)
    if suffix in TIFF_SUFFIXES:
        return _over_field(width, height)
    return min(width, height) >= MIN_SLIDE_SIDE and _over_field(width, height)


def _over_field(width: int, height: int) -> bool:
    return width * height > FIELD_MAX_PIXELS or max(width, height) > FIELD_MAX_SIDE


def _header_over_limit(path: Path) -> bool:
    """Pillow refuses to open an image far over its bomb limit (twice ``MAX_IMAGE_PIXELS``); ask again with ours."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with Image.open(path) as image:
            width, height = image.size
    except Exception:
        return False
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return min(width, height) >= MIN_SLIDE_SIDE and _over_field(width, height)

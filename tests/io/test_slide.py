"""Whole-slide reading: regions of tiled, pyramidal, stripped and decoded slides equal the mosaic they were written
from; damaged tiles are named or skipped; the file's own scale is read when it gives one."""

import numpy as np
import pytest
from PIL import Image

from benchmarks.slides import BUNDLED_BCCD, MosaicRenderer, mosaic, read_fields, write_slide
from leukolens.errors import LeukolensError
from leukolens.io.slide import BLANK, SlideReadError, is_slide, open_slide, too_damaged

tifffile = pytest.importorskip("tifffile", reason="the slides extra (tifffile) is not installed")

WIDTH, HEIGHT = 1500, 1100


@pytest.fixture(scope="module")
def renderer():
    return MosaicRenderer(mosaic(read_fields(BUNDLED_BCCD), WIDTH, HEIGHT, seed=3), WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def pixels(renderer):
    return renderer.region(0, 0, WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory, renderer):
    path = tmp_path_factory.mktemp("slides") / "pyramid.tif"
    return write_slide(path, renderer, tile=256, levels=2, microns_per_pixel=0.25)


REGIONS = [(0, 0, 300, 200), (250, 130, 700, 515), (1400, 1000, 100, 100), (17, 999, 1483, 101)]


@pytest.mark.parametrize("region", REGIONS)
def test_regions_of_a_tiled_pyramidal_bigtiff_equal_the_mosaic(pyramid, pixels, region):
    x, y, w, h = region
    with open_slide(pyramid) as slide:
        assert np.array_equal(slide.read_region(x, y, w, h), pixels[y : y + h, x : x + w])


def test_the_slide_record_says_size_levels_and_scale(pyramid):
    with open_slide(pyramid) as slide:
        info = slide.info
    assert (info.width, info.height, info.levels) == (WIDTH, HEIGHT, ((WIDTH, HEIGHT), (750, 550)))
    assert info.microns_per_pixel == pytest.approx(0.25) and info.reader == "tifffile" and info.tiled
    assert is_slide(pyramid)


def test_a_pyramid_level_is_read_in_its_own_pixels(pyramid):
    level = tifffile.imread(pyramid, series=0, level=1)
    with open_slide(pyramid) as slide:
        assert np.array_equal(slide.read_region(100, 60, 400, 300, level=1), level[60:360, 100:500])


def test_outside_the_slide_reads_as_glass(pyramid, pixels):
    with open_slide(pyramid) as slide:
        region = slide.read_region(WIDTH - 50, -20, 100, 60)
    assert np.array_equal(region[20:, :50], pixels[:40, WIDTH - 50 :])
    assert (region[:20] == BLANK).all() and (region[:, 50:] == BLANK).all()


def test_a_stripped_tiff_is_read_by_strips(tmp_path, pixels):
    path = tmp_path / "stripped.tif"
    tifffile.imwrite(path, pixels, rowsperstrip=64, compression="zlib")
    with open_slide(path) as slide:
        assert not slide.info.tiled
        assert np.array_equal(slide.read_region(321, 190, 777, 300), pixels[190:490, 321:1098])
    assert not is_slide(path)  # small and untiled: a field


def test_a_tiled_tiff_within_a_fields_limits_is_a_field(tmp_path, pixels):
    from leukolens.predict.fields import load_field

    path = tmp_path / "camera.tif"  # a 640x480 camera field that happens to be saved in tiles
    tifffile.imwrite(path, pixels[:480, :640], tile=(128, 128), compression="zlib")
    assert not is_slide(path)
    image, _ = load_field(path)
    assert np.array_equal(np.asarray(image), pixels[:480, :640])
    wide = tmp_path / "wide.tif"  # over a field's 8192 px, one level: a slide
    tifffile.imwrite(wide, np.zeros((64, 9000, 3), np.uint8), tile=(64, 64))
    assert is_slide(wide)


def test_folders_are_searched_for_slide_formats_too(tmp_path):
    from leukolens.predict.fields import find_images

    names = ["a.svs", "b.NDPI", "c.mrxs", "d.btf", "e.scn", "field.jpg", "notes.txt"]
    for name in names:
        (tmp_path / "sample" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "sample" / name).write_bytes(b"")
    assert [p.name for p in find_images([tmp_path])] == names[:-1]


@pytest.mark.parametrize("layout", [{}, {"byteorder": ">", "deep": True}, {"planarconfig": "separate"}])
def test_uncompressed_strips_are_read_row_by_row_never_whole(tmp_path, pixels, monkeypatch, layout):
    layout = dict(layout)
    data = pixels.astype(np.uint16) * 257 if layout.pop("deep", False) else pixels
    if layout.get("planarconfig") == "separate":
        data = np.moveaxis(data, -1, 0)
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, data, rowsperstrip=HEIGHT, photometric="rgb", **layout)  # one strip: the whole slide
    # a region must not decode the strip: reading it whole would hold the slide in memory
    monkeypatch.setattr(tifffile.TiffPage, "decode", property(lambda page: pytest.fail("strip decoded whole")))
    with open_slide(path) as slide:
        assert np.array_equal(slide.read_region(321, 190, 777, 300), pixels[190:490, 321:1098])
        assert np.array_equal(slide.read_region(0, 1000, WIDTH, 100), pixels[1000:1100])


def test_a_missing_codec_is_named_and_memory_is_no_damaged_tile(tmp_path, renderer, monkeypatch):
    path = write_slide(tmp_path / "slide.tif", renderer, tile=256)

    class NoCodecs(dict):
        def __getitem__(self, key):
            raise KeyError(f"{key!r} requires the 'imagecodecs' package")

    with monkeypatch.context() as patch:
        patch.setattr(tifffile.TIFF, "DECOMPRESSORS", NoCodecs())
        with pytest.raises(LeukolensError, match=r"slide.tif: .*ADOBE_DEFLATE.*needs the imagecodecs package.*"
                                                 r"leukolens\[slides\]"):
            open_slide(path, skip_damaged=True)

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(tifffile.TiffPage, "decode", property(lambda page: out_of_memory))
    with open_slide(path, skip_damaged=True) as slide, pytest.raises(MemoryError):
        slide.read_region(0, 0, 300, 300)
    assert slide.damaged == []


def test_a_slide_most_of_whose_tiles_are_damaged_is_refused(tmp_path, renderer):
    path = write_slide(tmp_path / "wrecked.tif", renderer, tile=256)  # 6 x 5 tiles
    _corrupt_tile(path, 0)
    with open_slide(path, skip_damaged=True) as slide:
        slide.read_region(0, 0, WIDTH, HEIGHT)
        assert too_damaged(slide) is None  # one tile of 30: noted, the rest counted
    for index in range(1, 16):
        _corrupt_tile(path, index)
    with open_slide(path, skip_damaged=True) as slide:
        slide.read_region(0, 0, WIDTH, HEIGHT)
        assert too_damaged(slide) == (f"{path}: 16 of its 30 tiles cannot be read (first: {slide.damaged[0].reason}):"
                                      " the file is damaged or truncated; nothing is concluded from the rest")


def test_grey_and_16_bit_tiles_become_rgb_bytes(tmp_path, pixels):
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, pixels[..., 1], tile=(128, 128))
    deep = tmp_path / "deep.tif"
    tifffile.imwrite(deep, pixels.astype(np.uint16) * 257, tile=(128, 128))
    with open_slide(grey) as slide:
        assert np.array_equal(slide.read_region(5, 5, 300, 200), np.repeat(pixels[5:205, 5:305, 1:2], 3, axis=2))
    with open_slide(deep) as slide:
        assert np.array_equal(slide.read_region(5, 5, 300, 200), pixels[5:205, 5:305])


def _corrupt_tile(path, index: int) -> tuple[int, int]:
    """Overwrite one tile's bytes with garbage; its top-left corner."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count, columns = page.dataoffsets[index], page.databytecounts[index], -(-page.imagewidth // 256)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00garbage" * (count // 8))
    row, column = divmod(index, columns)
    return column * 256, row * 256


def test_a_damaged_tile_is_named_or_read_as_glass(tmp_path, renderer, pixels):
    path = write_slide(tmp_path / "damaged.tif", renderer, tile=256)
    x, y = _corrupt_tile(path, 7)
    with open_slide(path) as slide, pytest.raises(SlideReadError, match=rf"tile at \({x}, {y}\) of level 0"):
        slide.read_region(0, 0, WIDTH, HEIGHT)
    with open_slide(path, skip_damaged=True) as slide:
        region = slide.read_region(0, 0, WIDTH, HEIGHT)
        slide.read_region(x, y, 10, 10)  # read again: recorded once
        assert [(d.x, d.y, d.width) for d in slide.damaged] == [(x, y, 256)]
    assert (region[y : y + 256, x : x + 256] == BLANK).all()
    rest = np.ones(region.shape[:2], bool)
    rest[y : y + 256, x : x + 256] = False
    assert np.array_equal(region[rest], pixels[rest])


def test_a_large_png_is_decoded_once_and_cut(tmp_path, pixels):
    wide = np.tile(pixels, (1, 6, 1))[:, :9000]  # 9000 px wide: over a field's 8192 px
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path, compress_level=1)
    assert is_slide(path)
    with open_slide(path) as slide:
        assert (slide.width, slide.height, slide.info.reader) == (9000, HEIGHT, "pillow")
        assert np.array_equal(slide.read_region(8000, 500, 1000, 300), wide[500:800, 8000:9000])
    Image.new("RGB", (9000, 10)).save(tmp_path / "strip.png")
    assert not is_slide(tmp_path / "strip.png")  # a strip, not a slide: refused as a field, as before


def test_the_scale_a_file_gives(tmp_path, pixels):
    small = pixels[:300, :300]
    cases = {
        "aperio.tif": ({"description": "Aperio Image Library v12 |AppMag = 40|MPP = 0.2527|"}, 0.2527),
        "cm.tif": ({"resolution": (1e4 / 0.5, 1e4 / 0.5), "resolutionunit": "CENTIMETER"}, 0.5),
        "inch.tif": ({"resolution": (25_400 / 0.1, 25_400 / 0.1), "resolutionunit": "INCH"}, 0.1),
        "dpi72.tif": ({"resolution": (72, 72), "resolutionunit": "INCH"}, None),  # a scanner's default, no scale
    }
    for name, (options, expected) in cases.items():
        tifffile.imwrite(tmp_path / name, small, tile=(128, 128), **options)
        with open_slide(tmp_path / name) as slide:
            assert slide.info.microns_per_pixel == (pytest.approx(expected) if expected else None), name


def test_unreadable_slides_are_clear_errors(tmp_path):
    with pytest.raises(LeukolensError, match="no such file"):
        open_slide(tmp_path / "missing.tif")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    with pytest.raises(LeukolensError, match="broken.tif: cannot read as a TIFF"):
        open_slide(tmp_path / "broken.tif")
    assert not is_slide(tmp_path / "broken.tif")  # left to the field path, which says why it cannot be read


def test_openslide_reads_the_same_regions_when_installed(pyramid, pixels):
    pytest.importorskip("openslide", reason="openslide-python is not installed (optional)")
    from leukolens.io.slide import OpenSlideSlide

    with OpenSlideSlide(pyramid) as slide:  # a generic tiled TIFF, which OpenSlide also reads
        assert (slide.width, slide.height) == (WIDTH, HEIGHT)
        assert np.array_equal(slide.read_region(250, 130, 700, 515), pixels[130:645, 250:950])

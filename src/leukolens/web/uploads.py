"""What an upload must be before it reaches the archive: a decodable smear image of sane size.

Every file is opened with Pillow and decoded whole, so a file that only looks like an image (a renamed text file,
a truncated JPEG) is refused at upload with its reason, not later in the analysis. A decompression bomb (a small
file that decodes to a huge image) is refused from its header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from leukolens.errors import LeukolensError
from leukolens.predict.fields import MAX_PIXELS, MAX_SIDE

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff", "BMP": "image/bmp"}
"""The image formats an upload may be in, with their media types."""
MIN_SIDE = 32
MAX_NAME = 200


class UploadError(LeukolensError):
    """An uploaded file that is not a usable field image (the service answers 415 or 422 with this message)."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class CheckedImage:
    name: str
    data: bytes
    format: str
    width: int
    height: int


def field_name(filename: str | None, position: int, used: set[str]) -> str:
    """A field's name from the uploaded file's name: its last path part, printable, without the suffix, unique in
    the sample. Stored as text only; never used as a path."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = base.rsplit(".", 1)[0] if "." in base[1:] else base
    base = "".join(ch for ch in base if ch.isprintable()).strip()[:MAX_NAME] or f"field-{position + 1}"
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}_{n}"
    used.add(name)
    return name


def check_image(name: str, data: bytes) -> CheckedImage:
    """The upload decoded and checked.

    Raises:
        UploadError: not an image of an accepted format (415), or empty, truncated, corrupt, too small or too
            large, a decompression bomb (422); each with the reason.
    """
    if not data:
        raise UploadError(f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in FORMATS:
                    raise UploadError(f"{name}: {image.format} images are not accepted: send one of "
                                      f"{', '.join(FORMATS)}", status=415)
                width, height = image.size
                if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
                    raise UploadError(f"{name}: image is {width}x{height} px, larger than a microscope field (at most "
                                      f"{MAX_SIDE} px a side and {MAX_PIXELS // 1_000_000} megapixels)")
                if min(width, height) < MIN_SIDE:
                    raise UploadError(f"{name}: image is {width}x{height} px, too small to be a smear field")
                image.load()  # decodes every pixel: a truncated or corrupt file fails here
                return CheckedImage(name, data, image.format, width, height)
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UploadError(f"{name}: refused as a decompression bomb ({error})") from None
    except Image.UnidentifiedImageError:
        raise UploadError(f"{name}: not an image (send {', '.join(FORMATS)})", status=415) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise UploadError(f"{name}: cannot decode the image ({error})") from None

"""Image uploads checked before a run starts: a real, complete image within a pixel limit.

An upload is opened by Pillow among the formats a browser can show; its size,
read from the header, is checked against the limit before any pixel is
decoded; then it is read to its end (a PNG's chunks checked without inflating
them, a JPEG decoded at 1/8 scale, other formats decoded), so a truncated or
corrupt file is refused here rather than failing the run later. Pillow's process-wide limits
(`Image.MAX_IMAGE_PIXELS`) are left as they are: the limit is per call.
"""

from __future__ import annotations

import io
from typing import Final

from ikproxy.errors import HTTPError
from ikproxy.io import ImageIO

__all__ = ["IMAGE_FORMATS", "verify_image"]

#: The formats accepted as uploads: those of `ImageIO`'s signatures that Pillow reads.
IMAGE_FORMATS: Final = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "AVIF")


def verify_image(data: bytes, max_pixels: int) -> ImageIO:
    """`data` as an `ImageIO` once decoded whole; `HTTPError` 415 (not an image) or 413."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise _too_many_pixels(None, max_pixels) from None
    except Exception:  # Pillow's plugins raise many types for a bad header
        raise _not_an_image() from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise _too_many_pixels((width, height), max_pixels)
        if width < 1 or height < 1:
            raise _not_an_image()
        try:
            if image.format == "PNG":
                image.verify()  # every chunk's CRC and the end, without inflating the pixels
            else:
                if image.format == "JPEG":  # decoded at 1/8 scale: all the data, 1/64 the work
                    image.draft(None, (max(1, width // 8), max(1, height // 8)))
                image.load()
        except Exception:  # truncated or corrupt data
            raise HTTPError(
                415, "unsupported_media_type", "the image is truncated or corrupt"
            ) from None
    return ImageIO.from_bytes(data)


def _not_an_image() -> HTTPError:
    return HTTPError(415, "unsupported_media_type", "the upload is not a supported image")


def _too_many_pixels(size: tuple[int, int] | None, max_pixels: int) -> HTTPError:
    what = f"the image is {size[0]}x{size[1]} pixels" if size else "the image is too large"
    return HTTPError(413, "payload_too_large", f"{what}: at most {max_pixels} pixels are accepted")

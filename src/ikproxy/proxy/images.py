"""Image uploads checked before a run starts: a real, complete image within a pixel limit.

An upload is sized first from its container's own headers (`imagesize`): every
frame, page or entry counted, before Pillow opens anything, since Pillow
decodes some formats inside `Image.open` (an ICO's largest entry) and sizes
others by their first frame only. The total must be within the limit: the
memory an upload can make the server allocate is bounded by the limit (about
4 bytes a pixel), whatever the bytes claim. Then Pillow opens it as that one
format only, and reads it to its end (a PNG's chunks checked without inflating
them, a JPEG decoded at 1/8 scale, other formats decoded), so a truncated or
corrupt file is refused here rather than failing the run later. Pillow's
process-wide limits (`Image.MAX_IMAGE_PIXELS`) are left as they are: the limit is per call.
"""

from __future__ import annotations

import io
from typing import Final

from ikproxy.errors import HTTPError
from ikproxy.io import ImageIO
from ikproxy.proxy.imagesize import Extent, measure

__all__ = ["IMAGE_FORMATS", "verify_image"]

#: The formats accepted as uploads: those of `ImageIO`'s signatures that Pillow reads.
IMAGE_FORMATS: Final = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "AVIF")

#: Formats whose decoder holds several canvases at once, by their cost in pixels a pixel
#: (the limit counts 4 bytes a pixel): Pillow decodes WebP through libwebp's animation
#: decoder (its canvas, the previous one and the decoder's buffers, then Pillow's copy:
#: about 16 bytes a pixel), AVIF through libavif (YUV planes, then RGBA, then Pillow's
#: copy: about 10), as measured by benchmarks/images_rss.py.
PIXEL_COST: Final = {"WEBP": 4, "AVIF": 3}


def verify_image(data: bytes, max_pixels: int) -> ImageIO:
    """`data` as an `ImageIO` once decoded whole; `HTTPError` 415 (not an image) or 413."""
    from PIL import Image

    extent = measure(data)
    if extent is None and not _is_avif(data):
        raise _not_an_image()
    if extent is not None and extent.pixels * _cost(extent) > max_pixels:
        raise _too_many_pixels(extent, max_pixels)
    fmt = extent.format if extent is not None else "AVIF"
    try:
        image = Image.open(io.BytesIO(data), formats=(fmt,))
    except Image.DecompressionBombError:
        raise _too_many_pixels(None, max_pixels) from None
    except Exception:  # Pillow's plugins raise many types for a bad header
        raise _not_an_image() from None
    with image:
        width, height = image.size
        if extent is None:  # AVIF, sized by its decoder's parse of the header
            extent = Extent(fmt, width, height, max(1, getattr(image, "n_frames", 1)))
            if extent.pixels * PIXEL_COST[fmt] > max_pixels:
                raise _too_many_pixels(extent, max_pixels)
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


def _is_avif(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and data[8:12] in {b"avif", b"avis"}


def _not_an_image() -> HTTPError:
    return HTTPError(415, "unsupported_media_type", "the upload is not a supported image")


def _cost(extent: Extent) -> float:
    return max(extent.cost, PIXEL_COST.get(extent.format, 1))


def _too_many_pixels(extent: Extent | None, max_pixels: int) -> HTTPError:
    accepted = f"at most {max_pixels} pixels are accepted"
    cost = _cost(extent) if extent is not None else 1
    if extent is not None and cost > 1:
        kind = extent.kind or extent.format
        accepted = f"at most {int(max_pixels // cost)} pixels are accepted in {kind} images"
    if extent is None:
        what = "the image is too large"
    elif extent.frames == 1:
        what = f"the image is {extent.width}x{extent.height} pixels"
    else:
        what = f"the image has {extent.frames} frames, {extent.pixels} pixels in all"
    return HTTPError(413, "payload_too_large", f"{what}: {accepted}")

"""`ikproxy.proxy.images.verify_image`: a real, complete image within a pixel limit, or a
413/415 `HTTPError` before any run starts."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from ikproxy.errors import HTTPError
from ikproxy.io import ImageIO
from ikproxy.proxy.images import IMAGE_FORMATS, verify_image
from tests.support.images import png, png_bad_crc, png_bomb, truncated_jpeg, truncated_png


def _encoded(fmt: str, size: tuple[int, int] = (6, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "green").save(buffer, format=fmt)
    return buffer.getvalue()


def _refusal(data: bytes, max_pixels: int = 1_000_000) -> tuple[int, str, str]:
    with pytest.raises(HTTPError) as refused:
        verify_image(data, max_pixels)
    return refused.value.status, refused.value.code, refused.value.message


def test_a_small_png_comes_back_as_the_same_bytes() -> None:
    data = png(5, 3)
    image = verify_image(data, max_pixels=15)
    assert isinstance(image, ImageIO)
    assert image.to_bytes() == data
    assert image.mime_type == "image/png"


@pytest.mark.parametrize("fmt", ["JPEG", "GIF", "BMP", "WEBP"])
def test_other_browser_formats_are_accepted(fmt: str) -> None:
    data = _encoded(fmt)
    assert verify_image(data, max_pixels=24).to_bytes() == data


def test_the_accepted_formats() -> None:
    assert IMAGE_FORMATS == ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "AVIF")


def test_one_pixel_over_the_limit_is_a_413_naming_the_size() -> None:
    assert _refusal(png(5, 3), max_pixels=14) == (
        413,
        "payload_too_large",
        "the image is 5x3 pixels: at most 14 pixels are accepted",
    )


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    status, code, message = _refusal(png_bomb(), max_pixels=40_000_000)
    assert (status, code) == (413, "payload_too_large")
    assert message.startswith("the image is ")
    assert message.endswith("at most 40000000 pixels are accepted")


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n", _encoded("PPM"), b"%PDF-1.7\n"],
    ids=["empty", "text", "bare-signature", "ppm", "pdf"],
)
def test_what_is_not_a_supported_image_is_a_415(data: bytes) -> None:
    assert _refusal(data) == (415, "unsupported_media_type", "the upload is not a supported image")


@pytest.mark.parametrize("make", [truncated_png, png_bad_crc, truncated_jpeg])
def test_a_truncated_or_corrupt_image_is_a_415(make: object) -> None:
    data = make()  # type: ignore[operator]
    assert _refusal(data) == (415, "unsupported_media_type", "the image is truncated or corrupt")

"""`ikproxy.proxy.images.verify_image`: a real, complete image within a pixel limit, or a
413/415 `HTTPError` before any run starts."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from ikproxy.errors import HTTPError
from ikproxy.io import ImageIO
from ikproxy.proxy.images import IMAGE_FORMATS, verify_image
from tests.support.images import (
    CONTAINER_BOMBS,
    png,
    png_bad_crc,
    png_bomb,
    truncated_jpeg,
    truncated_png,
)


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
    assert verify_image(data, max_pixels=4 * 24).to_bytes() == data


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


@pytest.mark.parametrize("name", sorted(CONTAINER_BOMBS))
def test_every_frame_page_and_entry_is_sized_before_decoding(name: str) -> None:
    data, status, message = CONTAINER_BOMBS[name]
    code = "payload_too_large" if status == 413 else "unsupported_media_type"
    assert _refusal(data, max_pixels=40_000_000) == (status, code, message)


def _frames(fmt: str, count: int, size: tuple[int, int] = (8, 6), **options: object) -> bytes:
    frames = [Image.new("RGB", size, (40 * i % 256, 0, 0)) for i in range(count)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], **options)
    return buffer.getvalue()


def test_a_webp_costs_four_pixels_a_pixel() -> None:
    data = _encoded("WEBP", (6, 4))
    assert verify_image(data, max_pixels=4 * 24).to_bytes() == data
    assert _refusal(data, max_pixels=4 * 24 - 1) == (
        413,
        "payload_too_large",
        "the image is 6x4 pixels: at most 23 pixels are accepted in WEBP images",
    )


def test_a_progressive_jpeg_costs_its_coefficients() -> None:
    image = Image.new("RGB", (6, 4), "green")
    full, subsampled = io.BytesIO(), io.BytesIO()
    image.save(full, format="JPEG", progressive=True, subsampling=0)  # 3 samples a pixel
    image.save(subsampled, format="JPEG", progressive=True, subsampling=2)  # 1.5
    assert verify_image(full.getvalue(), max_pixels=36).to_bytes() == full.getvalue()
    assert _refusal(full.getvalue(), max_pixels=35) == (
        413,
        "payload_too_large",
        "the image is 6x4 pixels: at most 23 pixels are accepted in progressive JPEG images",
    )
    assert verify_image(subsampled.getvalue(), max_pixels=24).to_bytes() == subsampled.getvalue()


def test_an_avif_costs_three_pixels_a_pixel_every_frame_counted() -> None:
    data = _frames("AVIF", 3, (6, 4))
    assert verify_image(data, max_pixels=3 * 3 * 24).to_bytes() == data
    assert _refusal(data, max_pixels=3 * 3 * 24 - 1) == (
        413,
        "payload_too_large",
        "the image has 3 frames, 72 pixels in all: at most 71 pixels are accepted in AVIF images",
    )


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "TIFF"])
def test_an_animation_or_multi_page_file_counts_every_frame(fmt: str) -> None:
    data = _frames(fmt, 3)
    assert verify_image(data, max_pixels=3 * 48).to_bytes() == data
    assert _refusal(data, max_pixels=3 * 48 - 1) == (
        413,
        "payload_too_large",
        f"the image has 3 frames, 144 pixels in all: at most {3 * 48 - 1} pixels are accepted",
    )


def test_an_icon_counts_every_entry_by_its_own_header() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (64, 64), "blue").save(
        buffer, format="ICO", sizes=[(16, 16), (32, 32), (64, 64)]
    )
    data = buffer.getvalue()
    total = 16 * 16 + 32 * 32 + 64 * 64
    assert verify_image(data, max_pixels=total).to_bytes() == data
    status, _, message = _refusal(data, max_pixels=total - 1)
    assert (status, message) == (
        413,
        f"the image has 3 frames, {total} pixels in all: at most {total - 1} pixels are accepted",
    )


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "PNG", "GIF", "WEBP", "TIFF"])
def test_a_single_frame_is_sized_as_width_times_height(fmt: str) -> None:
    from ikproxy.proxy.imagesize import measure

    extent = measure(_encoded(fmt, (7, 5)))
    assert extent is not None
    assert (extent.format, extent.width, extent.height, extent.frames, extent.pixels) == (
        fmt,
        7,
        5,
        1,
        35,
    )


def test_pillow_opens_only_the_format_the_header_was_read_as() -> None:
    # A PNG signature followed by a GIF: sized as a PNG (no IHDR), never opened as anything else.
    data = b"\x89PNG\r\n\x1a\n" + _encoded("GIF")
    assert _refusal(data) == (415, "unsupported_media_type", "the upload is not a supported image")

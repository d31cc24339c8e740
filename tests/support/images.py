"""Images for tests: a small valid PNG, and hostile files built byte by byte (bombs,
truncations and bare signatures)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png(size: int = 4, height: int | None = None, color: str = "red") -> bytes:
    """A small valid PNG, `size` pixels wide and `height` (else `size`) high, by Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size if height is None else height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG whose header claims `width` x `height` pixels, with a few rows of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", rows)
        + _chunk(b"IEND", b"")
    )


def truncated_png() -> bytes:
    """A valid PNG cut in the middle of its pixel data."""
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 64).convert("RGB").save(buffer, format="PNG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


def png_bad_crc() -> bytes:
    """A small PNG with one byte of its pixel data flipped: its chunk CRC no longer matches."""
    data = bytearray(png(16))
    at = data.index(b"IDAT") + 6
    data[at] ^= 0xFF
    return bytes(data)


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((128, 128), 64).convert("RGB").save(buffer, format="JPEG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


def ppm_bomb() -> bytes:
    return b"P6\n100000 100000\n255\n" + b"\x00" * 64


def pgm_bomb() -> bytes:
    return b"P5\n100000 100000\n255\n" + b"\x00" * 64


def qoi_bomb() -> bytes:
    return b"qoif" + struct.pack(">IIBB", 100000, 100000, 4, 0) + b"\x00" * 64


def psd_bomb() -> bytes:
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 30000, 30000, 8, 3)
    return header + struct.pack(">I", 0) * 3 + struct.pack(">H", 0) + b"\x00" * 64


#: Files that begin like an image and are nothing more.
SIGNATURES_ONLY = {
    "png": b"\x89PNG\r\n\x1a\n",
    "gif": b"GIF89a",
    "jpeg": b"\xff\xd8\xff",
    "bmp": b"BM",
}

#: Every hostile image, by name, with the status it must get: 413 too many pixels, 415 not an
#: image (or not a complete one).
HOSTILE_IMAGES: dict[str, tuple[bytes, int]] = {
    "png-bomb-20000x20000": (png_bomb(), 413),
    "png-truncated": (truncated_png(), 415),
    "png-bad-crc": (png_bad_crc(), 415),
    "jpeg-truncated": (truncated_jpeg(), 415),
    "ppm-bomb": (ppm_bomb(), 415),
    "pgm-bomb": (pgm_bomb(), 415),
    "qoi-bomb": (qoi_bomb(), 415),
    "psd-bomb": (psd_bomb(), 415),
    **{f"{name}-signature-only": (data, 415) for name, data in SIGNATURES_ONLY.items()},
    "not-an-image": (b"hello, world", 415),
}

HOSTILE_IMAGES["png-bomb-8000x8000"] = (png_bomb(8000, 8000), 413)
HOSTILE_IMAGES["png-bomb-10000x10000"] = (png_bomb(10000, 10000), 413)

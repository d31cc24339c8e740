"""A tiny valid PNG, built by hand: what a run answers when it has no image to echo."""

from __future__ import annotations

import base64
import struct
import zlib

__all__ = ["TINY_PNG", "TINY_PNG_B64"]


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of one colour (8-bit RGB, no filtering), with no imaging library."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(tag + data))
        return struct.pack(">I", len(data)) + tag + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


TINY_PNG: bytes = _png(8, 8, (64, 128, 192))
"""An 8x8 PNG of one colour."""

TINY_PNG_B64: str = base64.b64encode(TINY_PNG).decode("ascii")

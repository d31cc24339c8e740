"""The size of an image read from its container's own headers, before anything is decoded.

Pillow decodes some formats inside `Image.open` (an ICO's largest entry) and
sizes others by their first frame or page only, so `verify_image` reads the
bytes first: every frame of an animated PNG, GIF or WebP, every page of a
TIFF, every entry of an ICO (from the embedded PNG's or BMP's own header, not
the directory's claim). The total is what decoding the whole file may
allocate, in pixels; a header that cannot be read is no image.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["Extent", "measure"]

#: IFD entries read at most in a TIFF (all pages): bounds the walk of a hostile chain.
MAX_TIFF_ENTRIES: Final = 100_000
#: Pages read at most in a TIFF.
MAX_TIFF_PAGES: Final = 10_000


@dataclass(frozen=True)
class Extent:
    """A format, its largest frame's width and height, its frames and its pixels in all.

    `cost`: what decoding it holds per pixel, in pixels of 4 bytes, when more than one
    (a progressive JPEG keeps every coefficient, 2 bytes a sample); `kind` names it.
    """

    format: str
    width: int
    height: int
    frames: int = 1
    pixels: int = 0
    cost: float = 1.0
    kind: str = ""

    def __post_init__(self) -> None:
        if not self.pixels:
            object.__setattr__(self, "pixels", self.width * self.height * self.frames)


class _Unreadable(Exception):
    """The header is missing, truncated or inconsistent."""


def measure(data: bytes) -> Extent | None:
    """The `Extent` of an image in a format a browser shows, from its headers; None if unreadable.

    `pixels` sums every frame, page or entry; a frame is counted at the size
    of the canvas it is drawn on.
    """
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(data)
        if data.startswith((b"GIF87a", b"GIF89a")):
            return _gif(data)
        if data.startswith(b"\xff\xd8\xff"):
            return _jpeg(data)
        if data.startswith(b"BM"):
            return _bmp_dib(data, 14, "BMP")
        if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
            return _tiff(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data.startswith(b"\x00\x00\x01\x00"):
            return _ico(data)
    except (_Unreadable, struct.error, IndexError, ValueError):
        return None
    return None


def _positive(width: int, height: int) -> tuple[int, int]:
    if width < 1 or height < 1:
        raise _Unreadable
    return width, height


# -- PNG and APNG ---------------------------------------------------------------------------


def _png(data: bytes, at: int = 0) -> Extent:
    pos = at + 8
    width = height = 0
    declared = chunks = 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = pos + 8
        if kind == b"IHDR":
            width, height = _positive(*struct.unpack_from(">II", data, body))
        elif kind == b"acTL":
            declared = struct.unpack_from(">I", data, body)[0]
        elif kind == b"fcTL":
            chunks += 1
        elif kind == b"IEND":
            break
        pos = body + length + 4
    if not width:
        raise _Unreadable
    return Extent("PNG", width, height, max(1, declared, chunks))


# -- GIF ------------------------------------------------------------------------------------


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while True:
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos


def _gif(data: bytes) -> Extent:
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    canvas_w, canvas_h = _positive(width, height)
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = pixels = 0
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor
            left, top, w, h, local = struct.unpack_from("<HHHHB", data, pos + 1)
            canvas_w, canvas_h = max(canvas_w, left + w), max(canvas_h, top + h)
            frames += 1
            pixels += canvas_w * canvas_h
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
            pos = _skip_sub_blocks(data, pos + 1)  # LZW minimum code size, then the data
        else:
            raise _Unreadable
    if not frames:
        raise _Unreadable
    return Extent("GIF", canvas_w, canvas_h, frames, max(pixels, canvas_w * canvas_h * frames))


# -- JPEG -----------------------------------------------------------------------------------

_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PROGRESSIVE: Final = frozenset({0xC2, 0xC6, 0xCA, 0xCE})


def _jpeg(data: bytes) -> Extent:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise _Unreadable
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF_MARKERS:
            height, width, count = struct.unpack_from(">HHB", data, pos + 5)
            width, height = _positive(width, height)
            if marker not in _PROGRESSIVE:
                return Extent("JPEG", width, height)
            factors = [data[pos + 11 + 3 * i] for i in range(count)]
            most = max(f >> 4 for f in factors) * max(f & 15 for f in factors)
            samples = sum((f >> 4) * (f & 15) for f in factors) / most if most else 0
            if not samples:
                raise _Unreadable
            return Extent("JPEG", width, height, cost=2 * samples / 4, kind="progressive JPEG")
        if marker == 0xDA:  # a scan before any frame header
            raise _Unreadable
        pos += 2 + length
    raise _Unreadable


# -- BMP and ICO ----------------------------------------------------------------------------


def _bmp_dib(data: bytes, at: int, fmt: str) -> Extent:
    """The size from a DIB header at `at` (a BMP file's or an ICO entry's)."""
    (size,) = struct.unpack_from("<I", data, at)
    if size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack_from("<HH", data, at + 4)
    elif size >= 40:
        width, height = struct.unpack_from("<ii", data, at + 4)
    else:
        raise _Unreadable
    return Extent(fmt, *_positive(abs(width), abs(height)))


def _ico(data: bytes) -> Extent:
    (count,) = struct.unpack_from("<H", data, 4)
    if count < 1:
        raise _Unreadable
    width = height = pixels = 0
    for entry in range(count):
        size, offset = struct.unpack_from("<II", data, 6 + 16 * entry + 8)
        if offset >= len(data) or size < 1:
            raise _Unreadable
        if data.startswith(b"\x89PNG\r\n\x1a\n", offset):
            found = _png(data, offset)
        else:  # a DIB whose height counts the AND mask too: counted whole
            found = _bmp_dib(data, offset, "ICO")
        pixels += found.pixels
        if found.width * found.height > width * height:
            width, height = found.width, found.height
    return Extent("ICO", width, height, count, pixels)


# -- TIFF -----------------------------------------------------------------------------------


def _tiff(data: bytes) -> Extent:
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    if big:
        (offset,) = struct.unpack_from(order + "Q", data, 8)
        count_fmt, entry_size, next_fmt, value_at = "Q", 20, "Q", 12
    else:
        (offset,) = struct.unpack_from(order + "I", data, 4)
        count_fmt, entry_size, next_fmt, value_at = "H", 12, "I", 8
    seen: set[int] = set()
    width = height = pixels = pages = entries = 0
    while offset:
        if offset in seen or pages >= MAX_TIFF_PAGES:
            raise _Unreadable
        seen.add(offset)
        (count,) = struct.unpack_from(order + count_fmt, data, offset)
        entries += count
        if entries > MAX_TIFF_ENTRIES:
            raise _Unreadable
        start = offset + struct.calcsize(count_fmt)
        dims = {256: 0, 257: 0}
        for i in range(count):
            at = start + i * entry_size
            tag, kind = struct.unpack_from(order + "HH", data, at)
            if tag in dims:
                value_fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
                if value_fmt is None:
                    raise _Unreadable
                (dims[tag],) = struct.unpack_from(order + value_fmt, data, at + value_at)
        page_w, page_h = _positive(dims[256], dims[257])
        pages += 1
        pixels += page_w * page_h
        if page_w * page_h > width * height:
            width, height = page_w, page_h
        (offset,) = struct.unpack_from(order + next_fmt, data, start + count * entry_size)
    if not pages:
        raise _Unreadable
    return Extent("TIFF", width, height, pages, pixels)


# -- WebP -----------------------------------------------------------------------------------


def _webp(data: bytes) -> Extent:
    pos = 12
    frames = 0
    canvas: tuple[int, int] | None = None
    while pos + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        body = pos + 8
        if kind == b"VP8X":
            w = int.from_bytes(data[body + 4 : body + 7], "little") + 1
            h = int.from_bytes(data[body + 7 : body + 10], "little") + 1
            canvas = (w, h)
        elif kind == b"ANMF":
            frames += 1
        elif kind == b"VP8 " and canvas is None:
            if data[body + 3 : body + 6] != b"\x9d\x01\x2a":
                raise _Unreadable
            w, h = struct.unpack_from("<HH", data, body + 6)
            canvas = (w & 0x3FFF, h & 0x3FFF)
        elif kind == b"VP8L" and canvas is None:
            if data[body] != 0x2F:
                raise _Unreadable
            (bits,) = struct.unpack_from("<I", data, body + 1)
            canvas = ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        pos = body + length + (length & 1)
    if canvas is None:
        raise _Unreadable
    return Extent("WEBP", *_positive(*canvas), max(1, frames))

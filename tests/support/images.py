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


def _ico(entries: list[tuple[int, int, bytes]], kind: int = 1) -> bytes:
    """An ICO (CUR with `kind` 2) whose directory claims each entry's (width, height), whatever
    the entry's own header says."""
    head = struct.pack("<HHH", 0, kind, len(entries))
    offset = len(head) + 16 * len(entries)
    directory, blobs = b"", b""
    for width, height, blob in entries:
        directory += struct.pack(
            "<BBBBHHII", width % 256, height % 256, 0, 0, 1, 32, len(blob), offset
        )
        offset += len(blob)
        blobs += blob
    return head + directory + blobs


def dib(width: int, height: int, rows: int = 1) -> bytes:
    """A 32-bit BMP info header claiming `width` x `height` (an ICO entry's: height doubled for the
    mask), with `rows` rows of pixels."""
    header = struct.pack("<IiiHHIIiiII", 40, width, height * 2, 1, 32, 0, 0, 0, 0, 0, 0)
    return header + b"\x00" * (width * 4 * rows)


def ico_png_bomb(width: int = 12000, height: int = 12000) -> bytes:
    """An ICO whose directory claims 16x16 and which embeds a PNG of `width` x `height`."""
    return _ico([(16, 16, png_bomb(width, height))])


def ico_hidden_entry() -> bytes:
    """An ICO whose largest claimed entry is a real 32x32 PNG, and whose second entry, claimed
    16x16, is an 8000x8000 PNG: Pillow loads the first, the second is never sized."""
    return _ico([(32, 32, png(32)), (16, 16, png_bomb(8000, 8000))])


def ico_bmp_bomb() -> bytes:
    """An ICO whose directory claims 16x16 and which embeds a BMP of 30000x30000."""
    return _ico([(16, 16, dib(30000, 30000))])


def cur_png() -> bytes:
    """A cursor (an ICO of kind 2) embedding a small PNG: a format browsers do not show inline."""
    return _ico([(4, 4, png(4))], kind=2)


def _tiff_page(width: int, height: int, next_offset: int, data_offset: int) -> bytes:
    entries = [
        (256, 4, 1, width),  # ImageWidth
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: black is zero
        (273, 4, 1, data_offset),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, width * height),  # StripByteCounts
    ]
    body = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<H", value) + b"\x00\x00" if kind == 3 else struct.pack("<I", value)
        body += struct.pack("<HHI", tag, kind, count) + packed
    return body + struct.pack("<I", next_offset)


def tiff_pages(sizes: list[tuple[int, int]], loop: bool = False) -> bytes:
    """A little-endian TIFF with one page per (width, height), 8-bit grey, 4 bytes of pixels
    each (the size is the header's claim); with `loop`, the last page points back to the first."""
    ifd_size = 2 + 9 * 12 + 4
    first = 8
    out = b"II*\x00" + struct.pack("<I", first)
    pixels_at = first + ifd_size * len(sizes)
    for i, (width, height) in enumerate(sizes):
        last = i == len(sizes) - 1
        following = (first if loop else 0) if last else first + ifd_size * (i + 1)
        out += _tiff_page(width, height, following, pixels_at)
    return out + b"\x00" * 4


def gif_frames(canvas: int = 1000, frames: int = 100) -> bytes:
    """A GIF of `canvas` x `canvas` pixels with `frames` frames of one pixel each."""
    out = b"GIF89a" + struct.pack("<HHBBB", canvas, canvas, 0x80, 0, 0) + b"\x00" * 3 + b"\xff" * 3
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return out + frame * frames + b"\x3b"


def apng_frames(canvas: int = 1000, frames: int = 100) -> bytes:
    """An APNG of `canvas` x `canvas` pixels whose `acTL` and `fcTL` chunks declare `frames`
    frames, with one row of data."""
    header = struct.pack(">IIBBBBB", canvas, canvas, 8, 0, 0, 0, 0)
    fctl = [
        _chunk(b"fcTL", struct.pack(">IIIIIHHBB", i, canvas, canvas, 0, 0, 1, 10, 0, 0))
        for i in range(frames)
    ]
    rows = zlib.compress(b"\x00" * (canvas + 1))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"acTL", struct.pack(">II", frames, 0))
        + fctl[0]
        + _chunk(b"IDAT", rows)
        + b"".join(fctl[1:])
        + _chunk(b"IEND", b"")
    )


def _riff(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)


def webp_frames(canvas: int = 1000, frames: int = 100) -> bytes:
    """An animated WebP of `canvas` x `canvas` pixels with `frames` empty `ANMF` chunks."""
    size = (canvas - 1).to_bytes(3, "little") * 2
    vp8x = _riff(b"VP8X", bytes([0x02, 0, 0, 0]) + size)
    anim = _riff(b"ANIM", b"\x00" * 6)
    anmf = _riff(b"ANMF", b"\x00" * 6 + b"\x00" * 6 + b"\x00" * 4) * frames
    body = b"WEBP" + vp8x + anim + anmf
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bmp_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A BMP whose header claims `width` x `height` pixels, with one row."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40, 0, 0, 14 + 40) + info + b"\x00" * (width * 3)


def jpeg_bomb(width: int = 65000, height: int = 65000) -> bytes:
    """A JPEG whose frame header (SOF0) claims `width` x `height`, with nothing after it."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xd9"


#: Container files whose headers claim more pixels than the limit (40,000,000 here), each with the
#: status and the exact message it must get: the size is read from every frame, page or entry.
CONTAINER_BOMBS: dict[str, tuple[bytes, int, str]] = {
    "ico-png-12000x12000": (
        ico_png_bomb(),
        413,
        "the image is 12000x12000 pixels: at most 40000000 pixels are accepted",
    ),
    "ico-hidden-8000x8000-entry": (
        ico_hidden_entry(),
        413,
        "the image has 2 frames, 64001024 pixels in all: at most 40000000 pixels are accepted",
    ),
    "ico-bmp-30000x30000": (
        ico_bmp_bomb(),
        413,
        "the image is 30000x60000 pixels: at most 40000000 pixels are accepted",
    ),
    "cur-png": (cur_png(), 415, "the upload is not a supported image"),
    "tiff-page-2-20000x20000": (
        tiff_pages([(4, 4), (20000, 20000)]),
        413,
        "the image has 2 frames, 400000016 pixels in all: at most 40000000 pixels are accepted",
    ),
    "tiff-ifd-loop": (
        tiff_pages([(4, 4), (4, 4)], loop=True),
        415,
        "the upload is not a supported image",
    ),
    "gif-100-frames-1000x1000": (
        gif_frames(),
        413,
        "the image has 100 frames, 100000000 pixels in all: at most 40000000 pixels are accepted",
    ),
    "apng-100-frames-1000x1000": (
        apng_frames(),
        413,
        "the image has 100 frames, 100000000 pixels in all: at most 40000000 pixels are accepted",
    ),
    "webp-100-frames-1000x1000": (
        webp_frames(),
        413,
        "the image has 100 frames, 100000000 pixels in all:"
        " at most 10000000 pixels are accepted in WEBP images",
    ),
    "bmp-30000x30000": (
        bmp_bomb(),
        413,
        "the image is 30000x30000 pixels: at most 40000000 pixels are accepted",
    ),
    "jpeg-65000x65000": (
        jpeg_bomb(),
        413,
        "the image is 65000x65000 pixels: at most 40000000 pixels are accepted",
    ),
}

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

HOSTILE_IMAGES.update({name: (data, status) for name, (data, status, _) in CONTAINER_BOMBS.items()})
HOSTILE_IMAGES["png-bomb-8000x8000"] = (png_bomb(8000, 8000), 413)
HOSTILE_IMAGES["png-bomb-10000x10000"] = (png_bomb(10000, 10000), 413)

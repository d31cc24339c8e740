"""Hostile image uploads against the memory bound: the server's peak RSS for each file.

    ./dev bench images_rss          # or: .venv/bin/python benchmarks/images_rss.py [--mpx 16]

The proxy (uvicorn, one worker, `max_image_pixels` = `--mpx` million) runs as its
own process; each file is posted to it as a browser would (multipart, to
`/run`). Each file goes to a fresh server process (memory freed by one upload would
hide the next one's growth), after one small upload that warms it up; then its peak RSS
is reset (`/proc/<pid>/clear_refs`, 5) and its RSS read; after the answer, its peak
(`VmHWM`) is read. Printed per file:
the answer, the growth of the peak over the RSS before, and the bound it must stay
under: `max_image_pixels` x 4 bytes (a decoded RGBA pixel) + a fixed margin of
`--margin` MiB (the request body, held once, and the decoders' buffers). The files
are real (their pixels compress to little): bombs in a container (an ICO or a CUR
embedding a large PNG or BMP, a TIFF whose second page is large), animations whose
frames add up (GIF, APNG, WebP, AVIF), plain images over the limit, and, for
reference, images at the limit, which are accepted and decoded.
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image

from _procs import free_port, serving

MiB = 1024**2


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _frames(fmt: str, size: int, count: int, **options: object) -> bytes:
    frames = [Image.new("RGB", (size, size), (i * 9 % 256, 0, 0)) for i in range(count)]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], **options)


def _icon(blob: bytes, kind: int = 1) -> bytes:
    """An ICO (a CUR with `kind` 2) whose directory claims 16x16 for `blob`."""
    head = struct.pack("<HHH", 0, kind, 1)
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(blob), 6 + 16)
    return head + entry + blob


def _dib(width: int, height: int) -> bytes:
    """A 32-bit BMP info header claiming `width` x `height` (twice, for the mask), one row."""
    header = struct.pack("<IiiHHIIiiII", 40, width, height * 2, 1, 32, 0, 0, 0, 0, 0, 0)
    return header + b"\x00" * (width * 4)


def _bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info + b"\x00" * (width * 3)


def files(limit: int) -> dict[str, Callable[[], bytes]]:
    """Each file by name, built when it is posted (the big ones take a moment)."""
    side = int(limit**0.5)  # a square image at the limit
    big = 12000
    quarter = side // 2  # a WebP costs 4 pixels a pixel (PIXEL_COST), an AVIF 3
    third = int((limit / 3) ** 0.5)
    prog = int((limit / 1.5) ** 0.5)  # 2 bytes a coefficient, 3 samples a pixel
    gray = lambda n: Image.new("L", (n, n), 0)  # noqa: E731

    def noise(n: int) -> Image.Image:  # RGB gradients: real colours, small files
        ramp = Image.linear_gradient("L").resize((n, n))
        return Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.ROTATE_90), ramp))

    return {
        f"png {side}x{side} rgb (at the limit)": lambda: _save(noise(side), "PNG"),
        f"jpeg {side}x{side} rgb (at the limit)": lambda: _save(noise(side), "JPEG"),
        f"jpeg {prog}x{prog} progressive 4:4:4 (at the limit)": lambda: _save(
            noise(prog), "JPEG", progressive=True, subsampling=0
        ),
        f"gif {side}x{side} (at the limit)": lambda: _save(noise(side), "GIF"),
        f"bmp {side}x{side} rle8 (at the limit)": lambda: _save(
            noise(side).convert("P"), "BMP", compression=1
        ),
        f"tiff {side}x{side} rgb (at the limit)": lambda: _save(
            noise(side), "TIFF", compression="tiff_adobe_deflate"
        ),
        f"webp {quarter}x{quarter} rgb (at the limit)": lambda: _save(noise(quarter), "WEBP"),
        f"avif {third}x{third} rgb (at the limit)": lambda: _save(noise(third), "AVIF", speed=10),
        f"ico: 16x16 claimed, png {big}x{big} inside": lambda: _icon(_save(gray(big), "PNG")),
        f"cur: 16x16 claimed, png {big}x{big} inside": lambda: _icon(
            _save(gray(big), "PNG"), kind=2
        ),
        "ico: 16x16 claimed, bmp 30000x30000 inside": lambda: _icon(_dib(30000, 30000)),
        f"tiff: page 1 64x64, page 2 {big}x{big}": lambda: _save(
            gray(64),
            "TIFF",
            save_all=True,
            append_images=[gray(big)],
            compression="tiff_adobe_deflate",
        ),
        "gif: 40 frames of 2000x2000": lambda: _frames("GIF", 2000, 40),
        "apng: 40 frames of 2000x2000": lambda: _frames("PNG", 2000, 40),
        "webp: 40 frames of 2000x2000": lambda: _frames("WEBP", 2000, 40, lossless=True),
        "avif: 8 frames of 1500x1500": lambda: _frames("AVIF", 1500, 8, speed=10),
        f"png {big}x{big}": lambda: _save(gray(big), "PNG"),
        f"jpeg {big}x{big}": lambda: _save(gray(big), "JPEG"),
        f"gif {big}x{big}": lambda: _save(gray(big), "GIF"),
        "webp 9000x9000": lambda: _save(gray(9000), "WEBP", lossless=True),
        "bmp 30000x30000 (header)": lambda: _bmp_header(30000, 30000),
    }


def _status(pid: int) -> dict[str, int]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mpx", type=float, default=16, help="max_image_pixels, in millions")
    parser.add_argument("--margin", type=int, default=32, help="the fixed margin, in MiB")
    args = parser.parse_args()
    limit = int(args.mpx * 1_000_000)
    bound = limit * 4 + args.margin * MiB
    port = free_port()
    env = {
        **os.environ,
        "IKPROXY_BENCH_MAX_PIXELS": str(limit),
        "PYTHONPATH": os.pathsep.join(
            [str(Path.cwd()), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    command = [sys.executable, "-m", "uvicorn", "_images_app:app", "--port", str(port)]
    command += ["--log-level", "warning"]
    print(f"max_image_pixels = {limit}; bound = {limit} x 4 B + {args.margin} MiB", end="")
    print(f" = {bound / MiB:.0f} MiB")
    head = f"{'file':48} {'bytes':>10} {'answer':>26} {'RSS before':>11} {'peak growth':>12}"
    print(f"{head} {'bound':>7}  ok")
    worst = 0.0
    warm = _save(Image.new("RGB", (8, 8)), "PNG")
    for name, build in files(limit).items():
        data = build()
        with serving(command, port, env=env) as (url, pid), httpx.Client(timeout=120) as http:
            http.post(url + "/run", files={"image": ("upload", warm)})
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak RSS to now
            before = _status(pid)["VmRSS"]
            reply = http.post(url + "/run", files={"image": ("upload", data)})
            peak = _status(pid)["VmHWM"]
            answer = str(reply.status_code)
            if reply.status_code != 200:
                answer += " " + reply.json()["error"]["code"]
        growth = peak - before
        worst = max(worst, growth / bound)
        ok = "yes" if growth <= bound else "NO"
        print(
            f"{name:48} {len(data):>10} {answer:>26} {before / MiB:>8.0f} MiB"
            f" {growth / MiB:>8.1f} MiB {bound / MiB:>4.0f} MiB  {ok}",
            flush=True,
        )
    print(f"largest growth: {worst:.0%} of the bound")


if __name__ == "__main__":
    main()

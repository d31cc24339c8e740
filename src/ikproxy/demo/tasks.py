"""A demo deployment whose tasks do real image work with Pillow: no model, no account.

* `generate` (no input; `prompt`, optional `size` and `seed`) paints a picture
  from the prompt's text in 20 steps over about 2 s, reporting progress and a
  shrinking ETA. The same prompt (and seed) always gives the same picture.
* `edges` (one image; optional `strength`) returns the image's edge map.

Both bound their inputs, since they back a public demo: a prompt of at most
500 characters, images of at most 4096x4096 pixels. Out-of-range values are
refused with `InvalidParameter` before the run starts.

    from ikproxy.demo import deployment
    results = deployment.run_sync(parameters={"prompt": "a lighthouse at dawn"})
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import io
import math
import os
import random
import time
import unicodedata
from collections.abc import Callable, Generator
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageOps

from ikproxy.decimals import parse_integer
from ikproxy.deployments import Deployment
from ikproxy.deployments.local import LocalDeployment, Update
from ikproxy.errors import InvalidParameter
from ikproxy.io import BaseIO, ImageIO

__all__ = [
    "MAX_IMAGE_SIDE",
    "MAX_PROMPT_LENGTH",
    "add_demo_tasks",
    "create_deployment",
    "deployment",
    "edges",
    "from_env",
    "generate",
]

MAX_PROMPT_LENGTH = 500
MAX_IMAGE_SIDE = 4096
MIN_SIZE, MAX_SIZE = 64, 1024
MAX_SEED = 2**32 - 1
MAX_STRENGTH = 10.0

STEPS = 20
STEP_SECONDS = 0.1  # at speed 1: the whole picture takes about 2 s, like a small model


def create_deployment(
    speed: float = 1.0, *, max_concurrency: int | None = 4, timeout: float | None = 60.0
) -> LocalDeployment:
    """A deployment with the `generate` and `edges` tasks; `speed=20` paints 20 times faster."""
    demo = LocalDeployment(max_concurrency=max_concurrency, timeout=timeout, name="demo")
    add_demo_tasks(demo, speed)
    return demo


def add_demo_tasks(deployment: Any, speed: float = 1.0) -> None:
    """Register `generate` and `edges` on `deployment` (a `LocalDeployment` or a Celery one)."""
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0 < speed < math.inf:
        raise ValueError(f"speed must be a number > 0, not {speed!r}")
    step_seconds = STEP_SECONDS / speed

    def generate_task(
        *, prompt: str, size: int | str = 512, seed: int | str | None = None
    ) -> Generator[Update, None, ImageIO]:
        return (yield from generate(prompt=prompt, size=size, seed=seed, step_seconds=step_seconds))

    deployment.add_task(generate_task, "generate", validate=_check_generate)
    deployment.add_task(edges, "edges", validate=_check_edges)


# -- generate ----------------------------------------------------------------------


def generate(
    *,
    prompt: str,
    size: int | str = 512,
    seed: int | str | None = None,
    step_seconds: float = STEP_SECONDS,
) -> Generator[Update, None, ImageIO]:
    """Paint a square picture from `prompt` in `STEPS` steps; return it as a PNG.

    Each step does its share of the painting, then waits out the rest of
    `step_seconds`, and reports the fraction done and the time left.
    """
    text, side, number = _generate_params(prompt, size, seed)
    painter = _Painter(text, side, number)
    steps = painter.steps()
    for done, paint in enumerate(steps, start=1):
        began = time.monotonic()
        paint()
        time.sleep(max(0.0, step_seconds - (time.monotonic() - began)))
        yield Update(fraction=done / STEPS, eta=(STEPS - done) * step_seconds * 1000)
    return ImageIO.from_pil(painter.image.convert("RGB"), format="PNG")


def _check_generate(*, prompt: object, size: object = 512, seed: object = None) -> None:
    _generate_params(prompt, size, seed)


def _generate_params(prompt: object, size: object, seed: object) -> tuple[str, int, int | None]:
    """The prompt (whitespace collapsed), size and seed, or `InvalidParameter`."""
    if not isinstance(prompt, str):
        raise InvalidParameter("prompt must be a string")
    if len(prompt) > MAX_PROMPT_LENGTH:
        raise InvalidParameter(
            f"prompt must be at most {MAX_PROMPT_LENGTH} characters, not {len(prompt)}"
        )
    text = " ".join(prompt.split())
    if not text:
        raise InvalidParameter("prompt must not be empty")
    side = _integer(size, "size", MIN_SIZE, MAX_SIZE)
    number = None if seed is None or seed == "" else _integer(seed, "seed", 0, MAX_SEED)
    return text, side, number


class _Painter:
    """A landscape painted in layers; every choice follows from the prompt (and seed).

    A sky gradient with stars, a glowing sun, soft bokeh, rolling hills from
    hazy to dark with mist between them, a vignette, then the prompt itself.
    """

    def __init__(self, prompt: str, size: int, seed: int | None) -> None:
        key = prompt if seed is None else f"{prompt}\x00{seed}"
        digest = hashlib.sha256(key.encode()).digest()
        self.rng = random.Random(int.from_bytes(digest[:8], "big"))
        self.prompt = prompt
        self.size = size
        self.hue = self.rng.random()
        self.horizon = self.rng.uniform(0.5, 0.62) * size
        self.sun = (self.rng.uniform(0.2, 0.8) * size, self.rng.uniform(0.2, 0.4) * size)
        self.image = Image.new("RGBA", (size, size))

    def steps(self) -> list[Callable[[], None]]:
        """`STEPS - 1` painting steps; the last step of a run encodes the picture."""
        hills = [functools.partial(self.hill, layer) for layer in range(_HILLS)]
        steps: list[Callable[[], None]] = [
            self.sky,
            self.stars,
            self.sun_disc,
            self.sun_rings,
            *(self.bokeh for _ in range(4)),
            *hills[: _HILLS // 2],
            self.mist,
            *hills[_HILLS // 2 :],
            self.vignette,
            self.caption,
        ]
        assert len(steps) == STEPS - 1
        return steps

    # -- the layers, back to front -------------------------------------------------

    def sky(self) -> None:
        """A vertical gradient from a deep colour to a bright horizon, lit around the sun."""
        size = self.size
        top = self._colour(0.0, 0.65, 0.35)
        bottom = self._colour(self.rng.uniform(0.06, 0.14), 0.55, 0.98)
        mask = Image.linear_gradient("L").resize((size, size), Image.Resampling.BICUBIC)
        sky = Image.composite(
            Image.new("RGB", mask.size, bottom), Image.new("RGB", mask.size, top), mask
        )
        glow = self._radial(self.sun, 0.9 * size, 150)
        warm = Image.new("RGB", mask.size, self._colour(0.1, 0.35, 1.0))
        self.image = Image.composite(warm, sky, glow).convert("RGBA")

    def sun_disc(self) -> None:
        """The sun: a bright disc with a soft halo."""
        radius = self.rng.uniform(0.07, 0.12) * self.size
        halo = self._radial(self.sun, radius * 3.2, 170)
        self._fill(self._colour(0.11, 0.3, 1.0), halo)
        self._fill(self._colour(0.13, 0.18, 1.0), self._disc(self.sun, radius), alpha=235)

    def sun_rings(self) -> None:
        """Faint concentric rings around the sun."""
        mask = Image.new("L", (self.size * 2, self.size * 2))
        draw = ImageDraw.Draw(mask)
        x, y = (2 * c for c in self.sun)
        radius = self.rng.uniform(0.18, 0.24) * self.size * 2
        for ring in range(self.rng.randint(2, 4)):
            r = radius * (1 + 0.45 * ring)
            draw.ellipse((x - r, y - r, x + r, y + r), outline=60 - 12 * ring, width=3)
        self._fill(self._colour(0.12, 0.2, 1.0), self._downscale(mask))

    def bokeh(self) -> None:
        """A few soft, translucent circles of light in the sky."""
        size, rng = self.size, self.rng
        mask = Image.new("L", (size * 2, size * 2))
        draw = ImageDraw.Draw(mask)
        for _ in range(rng.randint(3, 6)):
            r = rng.uniform(0.01, 0.05) * size * 2
            x, y = rng.uniform(0, 2 * size), rng.uniform(0, 1.9 * self.horizon)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=rng.randint(40, 110))
        mask = self._downscale(mask).filter(ImageFilter.GaussianBlur(size / 300))
        self._fill(self._colour(rng.choice((0.5, 0.45, 0.15, 0.0)), 0.35, 1.0), mask)

    def stars(self) -> None:
        """Pinpricks of light high in the sky."""
        size, rng = self.size, self.rng
        mask = Image.new("L", (size, size))
        draw = ImageDraw.Draw(mask)
        for _ in range(rng.randint(25, 60)):
            x, y = rng.uniform(0, size), rng.uniform(0, 0.45 * size) ** 1.3 / (0.45 * size) ** 0.3
            r = rng.choice((0.6, 0.8, 1.0, 1.4)) * size / 512
            draw.ellipse((x - r, y - r, x + r, y + r), fill=rng.randint(90, 220))
        self._fill((255, 255, 245), mask)

    def hill(self, layer: int) -> None:
        """One ridge of rolling hills: far ones high and hazy, near ones low and dark."""
        size, rng = self.size, self.rng
        depth = layer / (_HILLS - 1)  # 0: farthest, 1: nearest
        base = self.horizon + depth * 0.38 * size
        waves = [
            (
                rng.uniform(0.01, 0.05) * size * (1 - 0.5 * depth),
                rng.uniform(1, 4),
                rng.uniform(0, 6.3),
            )
            for _ in range(3)
        ]
        points = [(0.0, 2.0 * size)]
        for step in range(129):
            x = step / 128 * size
            y = base - sum(a * math.sin(f * 2 * math.pi * x / size + p) for a, f, p in waves)
            points.append((2 * x, 2 * y))
        points.append((2.0 * size, 2.0 * size))
        mask = Image.new("L", (size * 2, size * 2))
        ImageDraw.Draw(mask).polygon(points, fill=255)
        colour = self._colour(-0.05 - 0.07 * depth, 0.3 + 0.45 * depth, 0.8 - 0.65 * depth)
        self._fill(colour, self._downscale(mask), alpha=round(215 + 40 * depth))

    def mist(self) -> None:
        """A band of mist along the far hills."""
        size = self.size
        band = Image.linear_gradient("L").resize((size, size // 3), Image.Resampling.BICUBIC)
        band = ImageChops.multiply(band, ImageOps.flip(band)).point(lambda v: min(255, v * 2))
        mask = Image.new("L", (size, size))
        mask.paste(band, (0, round(self.horizon + 0.08 * size - size / 6)))
        self._fill(self._colour(0.08, 0.2, 0.95), mask, alpha=150)

    def vignette(self) -> None:
        """Darken the corners a little, to frame the picture."""
        mask = Image.radial_gradient("L").resize((self.size, self.size), Image.Resampling.BICUBIC)
        self._fill((10, 8, 24), mask.point(lambda v: max(0, v - 140) * 150 // 115))

    def caption(self) -> None:
        """The prompt, on a translucent band along the bottom."""
        size = self.size
        text = _drawable(self.prompt)
        if not text:
            return
        font = _font(max(10, size // 22))
        draw = ImageDraw.Draw(self.image)
        margin = size // 20
        lines = _wrap(text, font, draw, size - 4 * margin, max_lines=3)
        line_height = _text_height(font, draw) * 1.35
        band_height = round(line_height * len(lines) + 1.6 * margin)
        band = Image.new("L", (size, size))
        ImageDraw.Draw(band).rounded_rectangle(
            (margin, size - margin - band_height, size - margin, size - margin),
            radius=margin,
            fill=150,
        )
        self._fill((12, 12, 28), band)
        draw = ImageDraw.Draw(self.image)
        y = size - margin - band_height + 0.8 * margin
        for line in lines:
            draw.text((2 * margin, y), line, font=font, fill=(255, 255, 255, 240))
            y += line_height

    # -- helpers -------------------------------------------------------------------

    def _colour(self, hue: float, saturation: float, value: float) -> tuple[int, int, int]:
        """A colour at `hue` from the picture's own hue."""
        red, green, blue = colorsys.hsv_to_rgb((self.hue + hue) % 1.0, saturation, value)
        return round(red * 255), round(green * 255), round(blue * 255)

    def _fill(self, colour: tuple[int, int, int], mask: Image.Image, alpha: int = 255) -> None:
        """Paint `colour` through `mask` (scaled by `alpha`) over the picture."""
        if alpha != 255:
            mask = mask.point(lambda v: v * alpha // 255)
        layer = Image.new("RGBA", (self.size, self.size), colour)
        layer.putalpha(mask)
        self.image = Image.alpha_composite(self.image, layer)

    def _radial(self, centre: tuple[float, float], radius: float, peak: int) -> Image.Image:
        """A mask that fades from `peak` at `centre` to 0 at `radius`."""
        spot = ImageOps.invert(Image.radial_gradient("L"))
        spot = spot.point(lambda v: max(0, v - 74) * peak // 181)  # 0 at the gradient's radius
        side = max(2, round(2 * radius * 256 / 181))
        spot = spot.resize((side, side), Image.Resampling.BICUBIC)
        mask = Image.new("L", (self.size, self.size))
        mask.paste(spot, (round(centre[0] - side / 2), round(centre[1] - side / 2)))
        return mask

    def _disc(self, centre: tuple[float, float], radius: float) -> Image.Image:
        mask = Image.new("L", (self.size * 2, self.size * 2))
        x, y, r = 2 * centre[0], 2 * centre[1], 2 * radius
        ImageDraw.Draw(mask).ellipse((x - r, y - r, x + r, y + r), fill=255)
        return self._downscale(mask)

    def _downscale(self, mask: Image.Image) -> Image.Image:
        """A mask drawn at twice the size, scaled down: smooth, anti-aliased edges."""
        return mask.resize((self.size, self.size), Image.Resampling.BOX)


_HILLS = 8


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except (TypeError, ImportError):  # pragma: no cover - older Pillow or no FreeType
        return ImageFont.load_default()


def _drawable(text: str) -> str:
    """`text` without the characters the default font cannot draw (`é` becomes `e`)."""
    kept: list[str] = []
    for char in text:
        if _has_glyph(char):
            kept.append(char)
        else:
            kept.extend(part for part in unicodedata.normalize("NFKD", char) if _has_glyph(part))
    return " ".join("".join(kept).split())


@functools.lru_cache(maxsize=4096)
def _has_glyph(char: str) -> bool:
    """Whether the default font draws `char` as itself rather than as a missing-glyph box."""
    try:
        return _glyph(char) != _glyph("\U0010fffd")
    except (UnicodeError, ValueError):  # the bitmap font of an old Pillow: Latin-1 only
        return False


def _glyph(char: str) -> tuple[tuple[int, int], bytes]:
    mask = _font(16).getmask(char)
    return mask.size, bytes(mask)


def _wrap(
    text: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    draw: ImageDraw.ImageDraw,
    width: float,
    *,
    max_lines: int,
) -> list[str]:
    """`text` in lines that fit `width`; the last one ends with an ellipsis if cut short."""
    lines: list[str] = []
    words = text.split(" ")
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while draw.textlength(line, font=font) > width:  # one very long word: cut it
            cut = len(line) - 1
            while cut > 1 and draw.textlength(line[:cut], font=font) > width:
                cut -= 1
            words.insert(0, line[cut:])
            line = line[:cut]
        while words and draw.textlength(f"{line} {words[0]}", font=font) <= width:
            line = f"{line} {words.pop(0)}"
        lines.append(line)
    if words:
        last = lines[-1]
        while last and draw.textlength(last + "...", font=font) > width:
            last = last[:-1]
        lines[-1] = last.rstrip() + "..."
    return lines


def _text_height(
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont, draw: ImageDraw.ImageDraw
) -> float:
    _, top, _, bottom = draw.textbbox((0, 0), "Ag", font=font)
    return bottom - top


# -- edges -------------------------------------------------------------------------


def edges(image: BaseIO, *, strength: float | str = 1.0) -> Generator[float, None, ImageIO]:
    """The edge map of `image` (a Sobel filter on its grey levels) as a PNG.

    `strength` brightens the edges: 1 spans the full grey range, 2 doubles it.
    """
    gain = _strength(strength)
    picture = _open_image(image)
    picture.load()
    picture = ImageOps.exif_transpose(picture)
    yield 0.25
    if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
        flat = Image.new("RGBA", picture.size, "white")
        picture = Image.alpha_composite(flat, picture.convert("RGBA"))
    grey = picture.convert("L")
    yield 0.5
    edge_map = _sobel(grey)
    edge_map = ImageOps.autocontrast(edge_map, cutoff=(0, 0.5))
    if gain != 1.0:
        edge_map = edge_map.point([min(255, round(v * gain)) for v in range(256)])
    yield 0.75
    return ImageIO.from_pil(edge_map, format="PNG")


def _check_edges(image: BaseIO, *, strength: object = 1.0) -> None:
    _strength(strength)
    _open_image(image)  # reads the header only: the format and the size


def _open_image(image: BaseIO) -> Image.Image:
    """`image` opened by Pillow (not decoded yet), or `InvalidParameter`."""
    if not isinstance(image, ImageIO):
        raise InvalidParameter(f"the input must be an image, not {image.kind!r}")
    try:
        picture = Image.open(io.BytesIO(image.to_bytes()))
    except Image.DecompressionBombError:
        raise InvalidParameter(_too_large_message()) from None
    except (ValueError, OSError):
        raise InvalidParameter("the input is not an image Pillow can read") from None
    width, height = picture.size
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise InvalidParameter(f"the image is {width}x{height} pixels; {_too_large_message()}")
    return picture


def _too_large_message() -> str:
    return f"the largest accepted is {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}"


def _sobel(grey: Image.Image) -> Image.Image:
    """|gx| + |gy| of a Sobel filter, with a black frame where it is undefined."""
    width, height = grey.size
    if width < 3 or height < 3:
        return Image.new("L", grey.size, 0)
    kernels = (
        (-1, 0, 1, -2, 0, 2, -1, 0, 1),
        (1, 0, -1, 2, 0, -2, 1, 0, -1),
        (-1, -2, -1, 0, 0, 0, 1, 2, 1),
        (1, 2, 1, 0, 0, 0, -1, -2, -1),
    )
    # Pillow clips each filtered pixel to 0..255, so each sign of each gradient
    # gets its own pass; scale=8 keeps their sum within range.
    parts = [grey.filter(ImageFilter.Kernel((3, 3), k, scale=8)) for k in kernels]
    magnitude = functools.reduce(ImageChops.add, parts)
    # Pillow leaves the outermost pixels unfiltered: blank them.
    return ImageOps.expand(ImageOps.crop(magnitude, 1), border=1, fill=0)


def _strength(value: object) -> float:
    number = _number(value)
    if number is None or not 0 < number <= MAX_STRENGTH:
        raise InvalidParameter(f"strength must be a number above 0 and at most {MAX_STRENGTH:g}")
    return number


# -- parameters --------------------------------------------------------------------


def _integer(value: object, name: str, low: int, high: int) -> int:
    """An integer parameter, given as a number or as text (from an HTML form)."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        number = parse_integer(value.strip())
    if number is None or not low <= number <= high:
        raise InvalidParameter(f"{name} must be an integer from {low} to {high}")
    return number


def _number(value: object) -> float | None:
    """A finite number given as a number or as text, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and len(value) <= 40:
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


deployment = create_deployment()
"""The demo deployment: `generate` (the default task) and `edges`."""


def from_env() -> Deployment:
    """The SCALE deployment in `IKOMIA_ENDPOINT` (token from `IKOMIA_TOKEN`), else the demo.

    What the examples run on: no account needed, and a real deployment by
    setting two environment variables.
    """
    endpoint = os.environ.get("IKOMIA_ENDPOINT")
    if endpoint:
        from ikproxy.deployments.scale.client import Client

        return Client(endpoint)
    return deployment

"""The demo deployment: `generate` paints from a prompt, `edges` maps an image's edges."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image, ImageDraw

from ikproxy import demo
from ikproxy.deployments.local import LocalDeployment
from ikproxy.errors import InvalidParameter
from ikproxy.io import ImageIO, TaskIO
from ikproxy.model import Progress, State

pytestmark = pytest.mark.anyio

FAST = demo.create_deployment(speed=1000)  # paint without waiting between steps


async def generated(prompt: str, **parameters: Any) -> ImageIO:
    results = await FAST.run(parameters={"prompt": prompt, **parameters})
    return results.get_output(expect=ImageIO)


async def refusal(deployment: LocalDeployment, *inputs: Any, **kwargs: Any) -> str:
    """The message of the `InvalidParameter` the first `__anext__()` raises."""
    stream = deployment.run_stream(*inputs, **kwargs)
    with pytest.raises(InvalidParameter) as caught:
        await stream.__anext__()
    return str(caught.value)


def square_picture() -> ImageIO:
    """A white square (16..47) on a black 64x64 background."""
    picture = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(picture).rectangle((16, 16, 47, 47), fill="white")
    return ImageIO.from_pil(picture)


def test_the_default_deployment_has_both_tasks() -> None:
    assert demo.deployment.task_names == ("generate", "edges")
    assert demo.deployment.max_concurrency == 4


# -- generate ----------------------------------------------------------------------


async def test_generate_gives_a_png_of_the_requested_size() -> None:
    image = await generated("a lighthouse at dawn", size=128)

    assert image.format == "PNG"
    assert image.to_pil().size == (128, 128)
    assert image.to_pil().mode == "RGB"
    assert (await generated("a lighthouse at dawn")).to_pil().size == (512, 512)


async def test_generate_is_deterministic_for_a_prompt() -> None:
    first = await generated("a lighthouse at dawn", size=96)
    second = await generated("a lighthouse at dawn", size=96)

    assert first.to_bytes() == second.to_bytes()


async def test_different_prompts_or_seeds_give_different_images() -> None:
    lighthouse = await generated("a lighthouse at dawn", size=96)
    forest = await generated("a forest after rain", size=96)
    seeded = await generated("a lighthouse at dawn", size=96, seed=7)

    assert lighthouse.to_bytes() != forest.to_bytes()
    assert seeded.to_bytes() != lighthouse.to_bytes()
    assert seeded == await generated("a lighthouse at dawn", size="96", seed="7")


async def test_generate_reports_rising_fractions_and_shrinking_etas() -> None:
    deployment = demo.create_deployment(speed=20)  # 5 ms per step

    items: list[Progress] = [
        p async for p in deployment.run_stream(parameters={"prompt": "cat", "size": 64})
    ]

    updates = items[2:-1]
    assert [p.state for p in items[:2]] == [State.PENDING, State.STARTED]
    assert [p.fraction for p in updates] == [step / 20 for step in range(1, 20)]
    assert [p.eta for p in updates] == [(ms, ms) for ms in range(95, 0, -5)]
    assert items[-1].state == State.SUCCESS
    assert items[-1].results is not None
    assert items[-1].results.get_output(expect=ImageIO).to_pil().size == (64, 64)


async def test_generate_draws_long_and_unusual_prompts() -> None:
    long_prompt = "x" * 60 + " word" * 80
    image = await generated(long_prompt[:500], size=64)
    unusual = await generated("🙂 été 漢字", size=64)  # glyphs the default font lacks

    assert image.to_pil().size == unusual.to_pil().size == (64, 64)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"prompt": "x" * 501}, "prompt must be at most 500 characters, not 501"),
        ({"prompt": " \n\t "}, "prompt must not be empty"),
        ({"prompt": 42}, "prompt must be a string"),
        ({"prompt": "a", "size": 63}, "size must be an integer from 64 to 1024"),
        ({"prompt": "a", "size": 1025}, "size must be an integer from 64 to 1024"),
        ({"prompt": "a", "size": "big"}, "size must be an integer from 64 to 1024"),
        ({"prompt": "a", "size": True}, "size must be an integer from 64 to 1024"),
        ({"prompt": "a", "size": 100.0}, "size must be an integer from 64 to 1024"),
        ({"prompt": "a", "seed": -1}, "seed must be an integer from 0 to 4294967295"),
        ({"prompt": "a", "seed": "1" * 30}, "seed must be an integer from 0 to 4294967295"),
        ({}, "task 'generate' is missing required parameter 'prompt'"),
        (
            {"prompt": "a", "steps": 5},
            "unknown parameter 'steps' for task 'generate'; valid parameters: prompt, seed, size",
        ),
    ],
)
async def test_generate_refuses_out_of_range_parameters(
    parameters: dict[str, Any], message: str
) -> None:
    assert await refusal(FAST, parameters=parameters) == message


async def test_generate_takes_no_image() -> None:
    assert await refusal(FAST, square_picture(), parameters={"prompt": "a"}) == (
        "task 'generate' takes no inputs, got 1"
    )


def test_speed_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^speed must be a number > 0, not 0$"):
        demo.create_deployment(speed=0)


# -- edges -------------------------------------------------------------------------


async def test_edges_are_bright_on_the_border_and_dark_elsewhere() -> None:
    results = await FAST.run(square_picture(), task="edges")
    output = results.get_output(expect=ImageIO)
    edge_map = output.to_pil()

    assert output.format == "PNG"
    assert (edge_map.mode, edge_map.size) == ("L", (64, 64))
    for border in [(15, 32), (16, 32), (47, 32), (48, 32), (32, 15), (32, 16), (32, 47)]:
        assert edge_map.getpixel(border) == 255, border
    for flat in [(32, 32), (20, 40), (4, 4), (60, 32), (32, 60)]:
        assert edge_map.getpixel(flat) == 0, flat
    for frame in [(0, 0), (0, 32), (63, 32), (32, 63)]:
        assert edge_map.getpixel(frame) == 0, frame


async def test_edges_reports_each_stage() -> None:
    items = [p async for p in FAST.run_stream(square_picture(), task="edges")]

    assert [(p.state, p.fraction) for p in items] == [
        (State.PENDING, None),
        (State.STARTED, None),
        (State.STARTED, 0.25),
        (State.STARTED, 0.5),
        (State.STARTED, 0.75),
        (State.SUCCESS, 1.0),
    ]


async def test_edges_strength_scales_the_edge_map() -> None:
    half = await FAST.run(square_picture(), task="edges", parameters={"strength": "0.5"})

    assert half.get_output(expect=ImageIO).to_pil().getpixel((16, 32)) == 128


async def test_edges_sees_transparent_areas_as_white() -> None:
    # Transparent pixels with the circle's own colour: only the alpha tells them apart.
    transparent = Image.new("RGBA", (32, 32), (200, 0, 0, 0))
    ImageDraw.Draw(transparent).ellipse((8, 8, 23, 23), fill=(200, 0, 0, 255))
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([200, 0, 0, 200, 0, 0])
    ImageDraw.Draw(palette).ellipse((8, 8, 23, 23), fill=1)

    for image in (ImageIO.from_pil(transparent), ImageIO.from_pil(palette, transparency=0)):
        results = await FAST.run(image, task="edges")
        edge_map = results.get_output(expect=ImageIO).to_pil()
        border = edge_map.getpixel((8, 16))
        assert isinstance(border, int)
        assert border > 100
        assert edge_map.getpixel((16, 16)) == 0
        assert edge_map.getpixel((3, 3)) == 0


@pytest.mark.parametrize(
    ("image", "parameters", "message"),
    [
        (
            ImageIO.from_pil(Image.new("L", (4097, 1))),
            {},
            "the image is 4097x1 pixels; the largest accepted is 4096x4096",
        ),
        (
            ImageIO.from_pil(Image.new("L", (1, 5000))),
            {},
            "the image is 1x5000 pixels; the largest accepted is 4096x4096",
        ),
        (ImageIO.from_bytes(b"not an image"), {}, "the input is not an image Pillow can read"),
        (ImageIO.from_base64("%%%"), {}, "the input is not an image Pillow can read"),
        (TaskIO("label", {"text": "cat"}), {}, "the input must be an image, not 'label'"),
    ]
    + [
        (square_picture(), {"strength": bad}, "strength must be a number above 0 and at most 10")
        for bad in (0, -1, 10.5, "strong", float("nan"), True, None)
    ],
)
async def test_edges_refuses_bad_inputs(
    image: Any, parameters: dict[str, Any], message: str
) -> None:
    assert await refusal(FAST, image, task="edges", parameters=parameters) == message


async def test_edges_takes_exactly_one_image() -> None:
    assert await refusal(FAST, task="edges") == "task 'edges' takes 1 input, got 0"


def test_from_env_picks_scale_when_an_endpoint_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from ikproxy import Client
    from ikproxy.demo import deployment, from_env

    monkeypatch.delenv("IKOMIA_ENDPOINT", raising=False)
    assert from_env() is deployment
    monkeypatch.setenv("IKOMIA_ENDPOINT", "https://xyz.scale.example")
    monkeypatch.setenv("IKOMIA_TOKEN", "t")
    assert isinstance(from_env(), Client)

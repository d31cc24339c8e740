"""The shared output store on a real Redis: kept for the window, then 410, never 404 too soon."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import anyio
import pytest

from ikproxy.stores.outputs import OutputGone, SharedOutput, SharedOutputs


@pytest.mark.anyio
async def test_outputs_are_kept_for_the_window_then_gone(redis_url: str, tmp_path: Path) -> None:
    outputs = SharedOutputs(
        redis_url, prefix=f"o{secrets.token_hex(4)}", location=f"file://{tmp_path}", redis_limit=10
    )
    big = tmp_path / "big.bin"
    big.write_bytes(b"0123456789abcdef")
    try:
        token = await outputs.put(
            [SharedOutput("text/plain", b"small"), None, SharedOutput("application/x-a", path=big)],
            window=0.5,
        )
        small = await outputs.get(token, 0)
        assert (small.content_type, small.size, small.url) == ("text/plain", 5, None)
        assert b"".join([c async for c in small.open(1, 4)]) == b"mal"
        large = await outputs.get(token, 2)
        assert large.url == f"file://{tmp_path}/{token}/2"
        assert b"".join([c async for c in large.open(10, 16)]) == b"abcdef"
        with pytest.raises(KeyError):
            await outputs.get(token, 1)  # not kept: inline
        with pytest.raises(KeyError):
            await outputs.get("unknown", 0)
        with anyio.fail_after(5):
            while True:
                try:
                    await outputs.get(token, 0)
                except OutputGone:
                    break
                await anyio.sleep(0.05)
        with pytest.raises(OutputGone):
            await outputs.get(token, 2)
    finally:
        await outputs.aclose()


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="redis_limit must be a number of bytes >= 0"):
        SharedOutputs("redis://127.0.0.1:1/0", redis_limit=-1)


def _large_png() -> bytes:
    import io
    import os

    from PIL import Image

    buffer = io.BytesIO()
    Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_output_of_a_local_run_is_served_by_every_instance_sharing_the_store(
    redis_url: str,
) -> None:
    from ikproxy import LocalDeployment
    from ikproxy.asgi import create_app
    from ikproxy.io import ImageIO
    from ikproxy.stores import RedisStore
    from tests.support.servers import serving

    png = _large_png()  # about 270 kB: by reference, and small enough for Redis
    deployment = LocalDeployment({"paint": lambda: ImageIO.from_bytes(png)})
    prefix = f"o{secrets.token_hex(4)}"

    def app(store: RedisStore) -> object:
        return create_app(deployment, store=store, inline_output_limit=1000, rate_limit=None)

    with (
        serving(app(RedisStore(redis_url, prefix=prefix))) as a,
        serving(app(RedisStore(redis_url, prefix=prefix))) as b,
    ):
        body = a.get("/run").text
        data = json.loads(body.split("event: result\n", 1)[1].split("data: ", 1)[1].split("\n")[0])
        ref = data["results"]["outputs"][0]["ref"]
        assert ref["size"] == len(png)
        served = b.get(f"/{ref['url']}")
        assert served.status_code == 200
        assert served.content == png
        assert served.headers["content-type"] == "image/png"
        part = b.get(f"/{ref['url']}", headers={"Range": "bytes=0-7"})
        assert (part.status_code, part.content) == (206, png[:8])

"""Apps for the upload tests that need a real server (uvicorn `--factory`), and the benchmark."""

from __future__ import annotations

import os
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.routing import Mount

from ikproxy import LocalDeployment
from ikproxy.asgi import create_app
from ikproxy.io import FileIO


def create() -> Starlette:
    deployment = LocalDeployment()

    @deployment.task
    async def hold(video: FileIO) -> None:
        print(f"holding {video.path}", flush=True)
        await anyio.sleep_forever()

    proxy = create_app(
        deployment, rate_limit=None, accept=["video/mp4"], max_upload_bytes=10_000_000
    )
    return Starlette(routes=[Mount("/api", app=proxy)])


def video_bytes(size: int) -> bytes:
    """A fake MP4 (an `ftyp` box, then a pattern) that a page can rebuild byte for byte."""
    head = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
    return head + bytes((i * 31 + (i >> 8)) & 255 for i in range(size - len(head)))


class StoredOutputs:
    """A SCALE client as the proxy's deployment, asking for its outputs to be stored."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.storage = client.storage

    def run_stream(self, *inputs: Any, **options: Any) -> Any:
        return self.client.run_stream(*inputs, store_outputs=True, **options)

    async def run(self, *inputs: Any, **options: Any) -> Any:
        return await self.client.run(*inputs, store_outputs=True, **options)


def create_scale() -> Starlette:
    """The proxy in front of the fake SCALE at `$IKPROXY_TEST_SCALE_URL`, for videos."""
    from ikproxy import Client

    url = os.environ["IKPROXY_TEST_SCALE_URL"]
    client = Client(url, "fake-token", api_url=url, scalefs_url=url)
    proxy = create_app(
        StoredOutputs(client),
        rate_limit=None,
        accept=["image/*", "video/mp4"],
        max_upload_bytes=300_000_000,
    )
    # `/local`: a local task whose image output is over the inline limit.
    local = LocalDeployment()

    @local.task
    def picture() -> Any:
        from PIL import Image

        return Image.new("RGB", (64, 48), "green")

    by_reference = create_app(local, rate_limit=None, inline_output_limit=50)
    return Starlette(routes=[Mount("/api", app=proxy), Mount("/local", app=by_reference)])

"""The app of the upload shutdown test (a uvicorn `--factory`): a task that holds its video."""

from __future__ import annotations

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

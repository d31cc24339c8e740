"""The proxy of the upload benchmark (a uvicorn `--factory`): videos to the SCALE at
`$IKPROXY_BENCH_SCALE_URL` (a fake), one worker."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.routing import Mount

from ikproxy import Client
from ikproxy.asgi import create_app


def create() -> Starlette:
    url = os.environ["IKPROXY_BENCH_SCALE_URL"]
    client = Client(url, "fake-token", api_url=url, scalefs_url=url)
    proxy = create_app(
        client,
        rate_limit=None,
        accept=["image/*", "video/mp4"],
        max_upload_bytes=1024**3,
        timeout=None,
    )
    return Starlette(routes=[Mount("/api", app=proxy)])

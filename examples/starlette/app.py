"""ikproxy in a Starlette app: the proxy at /api, a demo page at /.

    python examples/starlette/app.py --port 8000

Runs on the built-in demo deployment, or on Ikomia SCALE when IKOMIA_ENDPOINT
(and IKOMIA_TOKEN) are set. Set IKPROXY_EXAMPLE_KEY to require
`Authorization: Bearer <key>` on /api/run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

from ikproxy.adapters.starlette import mount
from ikproxy.demo import from_env
from ikproxy.policy import AccessDenied, Param

INDEX = Path(__file__).resolve().parent.parent / "shared" / "index.html"


def authorize(request: Request) -> None:
    """Your own authentication goes here; this one checks a shared key, if one is set."""
    key = os.environ.get("IKPROXY_EXAMPLE_KEY")
    if key and request.headers.get("Authorization") != f"Bearer {key}":
        raise AccessDenied(401, "Bearer key required.")


async def index(request: Request) -> FileResponse:
    return FileResponse(INDEX)


app = Starlette(
    routes=[
        Route("/", index),
        mount(
            "/api",
            from_env(),
            authorize=authorize,
            parameters={"prompt": Param(str, required=True, max_length=500)},
        ),
    ]
)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)

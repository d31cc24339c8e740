"""ikproxy in a Litestar app: the proxy at /api, a demo page at /.

    python examples/litestar/app.py --port 8000

Runs on the built-in demo deployment, or on Ikomia SCALE when IKOMIA_ENDPOINT
(and IKOMIA_TOKEN) are set. Set IKPROXY_EXAMPLE_KEY to require
`Authorization: Bearer <key>` on /api/run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import uvicorn
from litestar import Litestar, Request, get
from litestar.response import File

from ikproxy.adapters.litestar import router
from ikproxy.demo import from_env
from ikproxy.policy import AccessDenied, Param

INDEX = Path(__file__).resolve().parent.parent / "shared" / "index.html"


def authorize(request: Request[Any, Any, Any]) -> None:
    """Your own authentication goes here; this one checks a shared key, if one is set."""
    key = os.environ.get("IKPROXY_EXAMPLE_KEY")
    if key and request.headers.get("Authorization") != f"Bearer {key}":
        raise AccessDenied(401, "Bearer key required.")


@get("/", include_in_schema=False)
async def index() -> File:
    return File(INDEX, content_disposition_type="inline", media_type="text/html")


app = Litestar(
    route_handlers=[
        index,
        router(
            from_env(),
            path="/api",
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

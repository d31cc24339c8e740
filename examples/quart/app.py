"""ikproxy in a Quart app: the proxy at /api, a demo page at /.

    python examples/quart/app.py --port 8000

Runs on the built-in demo deployment, or on Ikomia SCALE when IKOMIA_ENDPOINT
(and IKOMIA_TOKEN) are set. Set IKPROXY_EXAMPLE_KEY to require
`Authorization: Bearer <key>` on /api/run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Request, Response, send_file

from ikproxy.adapters.quart import blueprint
from ikproxy.demo import from_env
from ikproxy.policy import AccessDenied, Param

INDEX = Path(__file__).resolve().parent.parent / "shared" / "index.html"


def authorize(request: Request) -> None:
    """Your own authentication goes here; this one checks a shared key, if one is set."""
    key = os.environ.get("IKPROXY_EXAMPLE_KEY")
    if key and request.headers.get("Authorization") != f"Bearer {key}":
        raise AccessDenied(401, "Bearer key required.")


app = Quart(__name__)
app.register_blueprint(
    blueprint(
        from_env(),
        url_prefix="/api",
        authorize=authorize,
        parameters={"prompt": Param(str, required=True, max_length=500)},
    )
)


@app.get("/")
async def index() -> Response:
    return await send_file(INDEX)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    asyncio.run(serve(app, config))

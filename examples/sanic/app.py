"""ikproxy in a Sanic app: the proxy at /api, a demo page at /.

    python examples/sanic/app.py --port 8000

Runs on the built-in demo deployment, or on Ikomia SCALE when IKOMIA_ENDPOINT
(and IKOMIA_TOKEN) are set. Set IKPROXY_EXAMPLE_KEY to require
`Authorization: Bearer <key>` on /api/run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sanic import HTTPResponse, Request, Sanic
from sanic.response import file

from ikproxy.adapters.sanic import blueprint
from ikproxy.demo import from_env
from ikproxy.policy import AccessDenied, Param

INDEX = Path(__file__).resolve().parent.parent / "shared" / "index.html"


def authorize(request: Request) -> None:
    """Your own authentication goes here; this one checks a shared key, if one is set."""
    key = os.environ.get("IKPROXY_EXAMPLE_KEY")
    if key and request.headers.get("Authorization") != f"Bearer {key}":
        raise AccessDenied(401, "Bearer key required.")


app = Sanic("ikproxy_example")
app.blueprint(
    blueprint(
        from_env(),
        url_prefix="/api",
        authorize=authorize,
        parameters={"prompt": Param(str, required=True, max_length=500)},
    )
)


@app.get("/")
async def index(request: Request) -> HTTPResponse:
    return await file(INDEX)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    app.run(host=args.host, port=args.port, single_process=True)

"""Serve the plain example page next to the proxy: everything offline, nothing to install.

    python examples/frontends/plain/serve.py --port 8000

The page is at /, the proxy (on the local demo deployment) at /api.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ikproxy.asgi import create_app
from ikproxy.demo import deployment
from ikproxy.policy import Param

HERE = Path(__file__).resolve().parent

app = Starlette(
    routes=[
        Mount(
            "/api",
            app=create_app(
                deployment,
                task="generate",
                parameters={"prompt": Param(str, required=True, max_length=500)},
                max_inputs=0,
            ),
        ),
        Mount("/", app=StaticFiles(directory=HERE, html=True)),
    ]
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)

"""ikproxy in a FastAPI app: the proxy at /api, a demo page at /.

    python examples/fastapi/app.py --port 8000

Runs on the built-in demo deployment, or on Ikomia SCALE when IKOMIA_ENDPOINT
(and IKOMIA_TOKEN) are set. Set IKPROXY_EXAMPLE_KEY to require
`Authorization: Bearer <key>` on /api/run. The access check is an ordinary
FastAPI dependency; the endpoints are listed at /docs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse

from ikproxy.adapters.starlette import fastapi_router
from ikproxy.demo import from_env
from ikproxy.policy import Param

INDEX = Path(__file__).resolve().parent.parent / "shared" / "index.html"


def verify_key(request: Request) -> None:
    """Your own authentication goes here; this one checks a shared key, if one is set."""
    key = os.environ.get("IKPROXY_EXAMPLE_KEY")
    if key and request.headers.get("Authorization") != f"Bearer {key}":
        raise HTTPException(401, "Bearer key required.", headers={"WWW-Authenticate": "Bearer"})


app = FastAPI(title="ikproxy example")
app.include_router(
    fastapi_router(
        from_env(),
        prefix="/api",
        authorize=Depends(verify_key),
        parameters={"prompt": Param(str, required=True, max_length=500)},
    )
)


@app.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(INDEX)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)

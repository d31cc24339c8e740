"""A typed endpoint: the run's parameters as a pydantic model, published in the OpenAPI schema.

    python examples/typed-rpc/app.py --port 8000             # FastAPI
    python examples/typed-rpc/app.py --port 8000 --litestar  # the same API with Litestar

`/api/run` validates its parameters with `GenerateParameters` (400 JSON errors
naming the field) and streams the run; `/openapi.json` (Litestar:
`/schema/openapi.json`) describes the request, from which `schema.d.ts` is
generated with openapi-typescript. The page (`main.ts`, built into
`examples/frontends/dist/typed-rpc/`) is served at `/` when it was built.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ikproxy.demo import from_env

PAGE = Path(__file__).resolve().parent.parent / "frontends" / "dist" / "typed-rpc"


class GenerateParameters(BaseModel):
    """What a browser may ask of the `generate` task."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=500, description="What to paint")
    size: int = Field(256, ge=64, le=1024, description="The picture's width and height, in pixels")


def create_fastapi_app(page: Path = PAGE) -> Any:
    """The FastAPI app: the typed proxy at `/api`, the page at `/`."""
    from fastapi import FastAPI
    from starlette.staticfiles import StaticFiles

    from ikproxy.adapters.starlette import fastapi_router

    app = FastAPI(title="ikproxy typed RPC", version="1")
    proxy = fastapi_router(
        from_env(), prefix="/api", task="generate", parameters=GenerateParameters
    )
    app.include_router(proxy)
    if page.is_dir():
        app.mount("/", StaticFiles(directory=page, html=True), name="page")
    return app


def create_litestar_app(page: Path = PAGE) -> Any:
    """The Litestar app: the same API and page."""
    from litestar import Litestar
    from litestar.openapi import OpenAPIConfig
    from litestar.static_files import create_static_files_router

    from ikproxy.adapters.litestar import router

    handlers: list[Any] = [
        router(from_env(), path="/api", task="generate", parameters=GenerateParameters)
    ]
    if page.is_dir():
        handlers.append(create_static_files_router("/", directories=[page], html_mode=True))
    return Litestar(
        route_handlers=handlers,
        openapi_config=OpenAPIConfig(title="ikproxy typed RPC", version="1"),
    )


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--litestar", action="store_true", help="serve with Litestar")
    args = parser.parse_args()
    app = create_litestar_app() if args.litestar else create_fastapi_app()
    uvicorn.run(app, host=args.host, port=args.port)

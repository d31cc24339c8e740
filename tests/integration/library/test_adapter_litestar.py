"""The Litestar adapter under uvicorn on loopback (Litestar's test clients buffer streams).

The server runs `create_app()` below in a subprocess. Each test drives its own
held run, named by its prompt, through two control endpoints: `/ctl/release/x`
lets run `x` finish, and `/ctl/closed/x` says whether run `x` was closed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from litestar import Litestar, Request, get, post

from ikproxy.adapters.litestar import router
from ikproxy.policy import AccessDenied, Param
from tests.support.held import HeldRuns, HeldRunTests
from tests.support.servers import ROOT, free_port, running_server

# -- the server side -------------------------------------------------------------------


def create_app() -> Litestar:
    runs = HeldRuns()

    def authorize(request: Any) -> None:
        if "x-who" in request.headers:
            kind = "litestar.Request" if isinstance(request, Request) else repr(type(request))
            raise AccessDenied(403, kind)

    @post("/ctl/release/{name:str}", status_code=200)
    async def release(name: str) -> None:
        runs[name].release.set()

    @get("/ctl/closed/{name:str}")
    async def closed(name: str) -> str:
        done = await anyio.to_thread.run_sync(runs[name].closed.wait, 5)
        return "closed" if done else "open"

    proxy = router(
        runs,
        path="/api",
        parameters={"prompt": Param(str, required=True, max_length=20)},
        authorize=authorize,
        rate_limit=None,
        max_upload_bytes=1000,
    )
    return Litestar(route_handlers=[proxy, release, closed], on_shutdown=[runs.release_all])


# -- the tests ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    port = free_port()
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    args = ["-m", "uvicorn", f"{__name__}:create_app", "--factory", "--port", str(port)]
    with (
        running_server(args, ready="Uvicorn running on", env={"PYTHONPATH": path}),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client,
    ):
        yield client


class TestLitestarAdapter(HeldRunTests):
    request_kind = "litestar.Request"

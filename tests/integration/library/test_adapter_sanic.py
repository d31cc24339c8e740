"""The Sanic adapter under Sanic's own server on loopback (sanic-testing buffers streams).

The server runs `create_app()` below in a subprocess. Each test drives its own
held run, named by its prompt, through two control endpoints: `/ctl/release/x`
lets run `x` finish, and `/ctl/closed/x` says whether run `x` was closed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from sanic import HTTPResponse, Request, Sanic
from sanic.response import text

from ikproxy.adapters.sanic import blueprint
from ikproxy.policy import AccessDenied, Param
from tests.support.held import HeldRuns, HeldRunTests, read_until
from tests.support.servers import ROOT, free_port, running_server

# -- the server side -------------------------------------------------------------------


def create_app() -> Sanic[Any, Any]:
    runs = HeldRuns()
    app = Sanic("ikproxy_test_adapter_sanic")
    # Idle responses are cut after 1 s: the adapter must shorten the keepalive.
    app.config.RESPONSE_TIMEOUT = 1

    def authorize(request: Any) -> None:
        if "x-who" in request.headers:
            kind = "sanic.Request" if isinstance(request, Request) else repr(type(request))
            raise AccessDenied(403, kind)

    @app.post("/ctl/release/<name:str>")
    async def release(request: Request, name: str) -> HTTPResponse:
        runs[name].release.set()
        return text("released")

    @app.get("/ctl/closed/<name:str>")
    async def closed(request: Request, name: str) -> HTTPResponse:
        done = await anyio.to_thread.run_sync(runs[name].closed.wait, 0.8)
        return text("closed" if done else "open")

    @app.before_server_stop
    async def free(app: Sanic[Any, Any]) -> None:
        runs.release_all()

    @app.after_server_start
    async def ready(app: Sanic[Any, Any]) -> None:
        print("test server ready", flush=True)

    proxy = blueprint(
        runs,
        url_prefix="/api",
        parameters={"prompt": Param(str, required=True, max_length=20)},
        authorize=authorize,
        rate_limit=None,
        max_upload_bytes=1000,
        keepalive=30,
    )
    app.blueprint(proxy)
    return app


# -- the tests ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    port = free_port()
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    args = ["-m", "sanic", f"{__name__}:create_app", "--factory", "--single-process"]
    args += ["--port", str(port)]
    with (
        running_server(args, ready="test server ready", env={"PYTHONPATH": path}),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client,
    ):
        yield client


class TestSanicAdapter(HeldRunTests):
    request_kind = "sanic.Request"


def test_a_quiet_run_outlives_sanics_response_timeout(client: httpx.Client) -> None:
    # Three keepalives take 1.5 s: longer than RESPONSE_TIMEOUT, so they kept it open.
    name = uuid.uuid4().hex[:8]
    with client.stream("GET", "/api/run", params={"prompt": name}) as response:
        chunks = response.iter_raw()
        read_until(chunks, b": keepalive", 3)
        client.post(f"/ctl/release/{name}").raise_for_status()
        rest = b"".join(chunks)
    assert rest.count(b"event: result") == 1

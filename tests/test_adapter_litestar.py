"""The Litestar adapter under uvicorn on loopback (Litestar's test clients buffer streams).

The server runs `create_app()` below in a subprocess. Each test drives its own
held run, named by its prompt, through two control endpoints: `/ctl/release/x`
lets run `x` finish, and `/ctl/closed/x` says whether run `x` was closed.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from litestar import Litestar, Request, get, post

from ikproxy import Progress
from ikproxy.adapters.litestar import router
from ikproxy.policy import AccessDenied, Param

from ._support import ScriptedDeployment, free_port, running_server

ROOT = Path(__file__).resolve().parent.parent


# -- the server side -------------------------------------------------------------------


class _HeldRuns:
    """A deployment that holds each run before its result, one `ScriptedDeployment` per prompt."""

    def __init__(self) -> None:
        self.runs: dict[str, ScriptedDeployment] = {}

    def __getitem__(self, prompt: str) -> ScriptedDeployment:
        return self.runs.setdefault(prompt, ScriptedDeployment(hold=True))

    def release_all(self) -> None:
        """Let every held run go: a held run blocks a worker thread, and so the server's exit."""
        for run in self.runs.values():
            run.release.set()

    def run_stream(
        self, *inputs: Any, parameters: Any = None, **options: Any
    ) -> AsyncIterator[Progress]:
        return self[parameters["prompt"]].run_stream(*inputs, parameters=parameters, **options)


def create_app() -> Litestar:
    runs = _HeldRuns()

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


def _read_until(chunks: Iterator[bytes], marker: bytes, count: int = 1) -> bytes:
    seen = b""
    while seen.count(marker) < count:
        seen += next(chunks)
    return seen


def _error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()["error"]
    assert body["request_id"] == response.headers["x-request-id"]
    return response.status_code, body["code"], body["message"]


def test_progress_streams_before_the_run_ends(client: httpx.Client) -> None:
    name = uuid.uuid4().hex[:8]
    with client.stream("GET", "/api/run", params={"prompt": name}) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        chunks = response.iter_raw()
        seen = _read_until(chunks, b"event: progress", 2)
        assert b"event: result" not in seen
        client.post(f"/ctl/release/{name}").raise_for_status()
        rest = b"".join(chunks)
    assert rest.count(b"event: result") == 1


def test_ndjson_keeps_its_exact_media_type(client: httpx.Client) -> None:
    name = uuid.uuid4().hex[:8]
    client.post(f"/ctl/release/{name}").raise_for_status()
    response = client.get("/api/run", params={"prompt": name, "format": "ndjson"})
    assert response.headers["content-type"] == "application/x-ndjson"
    types = [json.loads(line)["type"] for line in response.text.splitlines()]
    assert types == ["progress", "progress", "result"]


def test_a_client_disconnect_closes_the_run(client: httpx.Client) -> None:
    name = uuid.uuid4().hex[:8]
    with client.stream("GET", "/api/run", params={"prompt": name}) as response:
        _read_until(response.iter_raw(), b"event: progress")
    assert client.get(f"/ctl/closed/{name}").text == "closed"


def test_the_hook_gets_litestars_request(client: httpx.Client) -> None:
    response = client.get("/api/run", params={"prompt": "x"}, headers={"X-Who": "1"})
    assert _error(response) == (403, "forbidden", "litestar.Request")


def test_a_bad_parameter_gets_400(client: httpx.Client) -> None:
    response = client.get("/api/run")
    assert _error(response) == (400, "invalid_parameter", "missing required parameter 'prompt'")


def test_a_declared_oversized_body_gets_413(client: httpx.Client) -> None:
    response = client.post(
        "/api/run", content=b"x" * 2000, headers={"Content-Type": "application/json"}
    )
    assert _error(response) == (413, "payload_too_large", "request body exceeds 1000 bytes")


def test_an_undeclared_oversized_body_gets_413_while_it_arrives(client: httpx.Client) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 500

    response = client.post("/api/run", content=body(), headers={"Content-Type": "application/json"})
    assert _error(response) == (413, "payload_too_large", "request body exceeds 1000 bytes")


def test_every_path_under_the_prefix_is_the_proxys(client: httpx.Client) -> None:
    health = client.get("/api/health")
    head = client.head("/api/health")
    missing = client.get("/api/nothing")
    wrong = client.options("/api/run")
    assert health.json()["status"] == "ok"
    assert head.status_code == 200
    assert head.headers["content-length"] == health.headers["content-length"]
    assert _error(missing) == (404, "not_found", "no such endpoint: /nothing")
    assert _error(wrong) == (405, "method_not_allowed", "method OPTIONS not allowed on /run")
    assert wrong.headers["allow"] == "GET, POST"

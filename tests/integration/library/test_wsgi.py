"""The WSGI mount: streaming, and a client that leaves closes the run (a2wsgi alone leaks it)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from ikproxy.concurrency import blocking_portal
from ikproxy.policy import Param
from ikproxy.proxy import Proxy
from ikproxy.wsgi import create_wsgi_app
from tests.support.deployments import ScriptedDeployment
from tests.support.http import read_until
from tests.support.servers import ROOT, free_port, running_server

PARAMS = {"prompt": Param(str, required=True, max_length=20)}
WATCHDOG = 5.0


@pytest.fixture
def deployment() -> Iterator[ScriptedDeployment]:
    deployment = ScriptedDeployment(hold=True)
    yield deployment
    deployment.release.set()


def _http(app: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver")


def _mounted(app: Any) -> Flask:
    """A Flask app with `app` mounted at /api, as users mount it."""
    host = Flask(__name__)
    host.wsgi_app = DispatcherMiddleware(host.wsgi_app, {"/api": app})  # type: ignore[method-assign]
    return host


def test_events_stream_and_leaving_closes_the_run(deployment: ScriptedDeployment) -> None:
    app = create_wsgi_app(deployment, parameters=PARAMS, rate_limit=None)
    watchdog = threading.Timer(WATCHDOG, deployment.release.set)
    watchdog.start()
    try:
        with _http(app) as http, http.stream("GET", "/run", params={"prompt": "x"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["x-accel-buffering"] == "no"
            head = read_until(response.iter_raw(), b"event: progress", 2)
            released_early = deployment.release.is_set()
        closed = deployment.closed.wait(5)
    finally:
        watchdog.cancel()
    assert not released_early, "the first events waited for the end of the run"
    assert b"event: result" not in head
    assert closed, "the run went on after the client left"
    assert not deployment.release.is_set()


def test_a_whole_run_through_a_prefix_mount(deployment: ScriptedDeployment) -> None:
    deployment.release.set()
    host = _mounted(create_wsgi_app(deployment, parameters=PARAMS, rate_limit=None))
    with _http(host) as http:
        assert http.get("/api/health").json()["status"] == "ok"
        missing = http.get("/api/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "no such endpoint: /nope"
        body = http.get("/api/run", params={"prompt": "x"}).content
    assert body.count(b"event: progress") == 2
    assert body.count(b"event: result") == 1


def test_a_post_body_and_the_hooks_go_through(deployment: ScriptedDeployment) -> None:
    deployment.release.set()
    seen: list[str] = []

    def authorize(request: Any) -> bool:
        seen.append(type(request).__name__)
        return request.headers.get("authorization") == "Bearer k"

    app = create_wsgi_app(deployment, parameters=PARAMS, rate_limit=None, authorize=authorize)
    with _http(_mounted(app)) as http:
        refused = http.post("/api/run", json={"prompt": "x"})
        response = http.post(
            "/api/run",
            json={"prompt": "a dog"},
            headers={"Authorization": "Bearer k", "Accept": "application/x-ndjson"},
        )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert seen == ["Request", "Request"]
    assert response.status_code == 200
    assert json.loads(response.content.splitlines()[-1])["type"] == "result"
    assert deployment.calls[0]["parameters"] == {"prompt": "a dog"}


def test_413_through_the_mount(deployment: ScriptedDeployment) -> None:
    app = create_wsgi_app(deployment, parameters=PARAMS, rate_limit=None, max_upload_bytes=8)
    with _http(app) as http:
        response = http.post("/run", json={"prompt": "a cat"})
    assert response.status_code == 413
    assert response.json()["error"]["message"] == "request body exceeds 8 bytes"


def test_runs_share_the_process_wide_event_loop(deployment: ScriptedDeployment) -> None:
    deployment.release.set()
    loops: list[asyncio.AbstractEventLoop] = []

    async def authorize(request: Any) -> None:
        loops.append(asyncio.get_running_loop())

    app = create_wsgi_app(deployment, parameters=PARAMS, rate_limit=None, authorize=authorize)
    assert isinstance(app.proxy, Proxy)
    with _http(app) as http:
        assert http.get("/run", params={"prompt": "x"}).status_code == 200
    assert loops == [blocking_portal().call(asyncio.get_running_loop)]


# -- under a real server ------------------------------------------------------------

#: Served by the subprocess below: the mount at /api, and /closed to ask whether the run closed.
server_deployment = ScriptedDeployment(hold=True)
server_app = _mounted(
    create_wsgi_app(server_deployment, parameters=PARAMS, rate_limit=None, keepalive=0.2)
)


@server_app.get("/closed")
def _closed() -> dict[str, bool]:
    return {"closed": server_deployment.closed.wait(10)}


def test_a_real_server_closes_the_run_when_the_client_leaves() -> None:
    port = free_port()
    args = [
        "-m",
        "flask",
        "--app",
        "tests.integration.library.test_wsgi:server_app",
        "run",
        "--port",
        str(port),
    ]
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with (
        running_server(args, ready="Running on", env={"PYTHONPATH": python_path}),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as http,
    ):
        with http.stream("GET", "/api/run", params={"prompt": "x"}) as response:
            assert response.status_code == 200
            read_until(response.iter_raw(), b"event: progress", 2)
        assert http.get("/closed").json() == {"closed": True}

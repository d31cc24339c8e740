"""The Quart adapter, through Quart's incremental test client (`client.request()`)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
import quart
from quart import Quart
from quart.testing.connections import TestHTTPConnection as HTTPConnection

from ikproxy.adapters.quart import blueprint
from ikproxy.policy import AccessDenied, Param
from tests.support.deployments import ScriptedDeployment

pytestmark = pytest.mark.anyio

PARAMS = {"prompt": Param(str, required=True, max_length=20)}


def _app(deployment: Any, **options: Any) -> Quart:
    options.setdefault("parameters", PARAMS)
    options.setdefault("rate_limit", None)
    app = Quart(__name__)
    app.register_blueprint(blueprint(deployment, url_prefix="/api", **options))
    return app


async def _read_until(conn: HTTPConnection, marker: bytes, count: int = 1) -> bytes:
    """Chunks until `marker` was seen `count` times (the end of the body is an error)."""
    seen = b""
    with anyio.fail_after(5):
        while seen.count(marker) < count:
            chunk = await conn.receive()
            assert chunk, f"the stream ended early: {seen!r}"
            seen += chunk
    return seen


async def _read_to_end(conn: HTTPConnection) -> bytes:
    seen = b""
    with anyio.fail_after(5):
        while chunk := await conn.receive():
            seen += chunk
    return seen


async def _closed(deployment: ScriptedDeployment) -> bool:
    return await anyio.to_thread.run_sync(deployment.closed.wait, 5)


async def test_progress_streams_before_the_run_ends() -> None:
    deployment = ScriptedDeployment(hold=True)
    client = _app(deployment).test_client()
    async with client.request("/api/run", query_string={"prompt": "x"}) as conn:
        await conn.send_complete()
        seen = await _read_until(conn, b"event: progress", 2)
        assert b"event: result" not in seen
        assert conn.status_code == 200
        assert conn.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert conn.headers["Cache-Control"] == "no-cache"
        assert conn.headers["X-Accel-Buffering"] == "no"
        assert "Connection" not in conn.headers
        deployment.release.set()
        rest = await _read_to_end(conn)
    assert rest.count(b"event: result") == 1


async def test_a_stream_outlives_quarts_response_timeout() -> None:
    # RESPONSE_TIMEOUT is a limit on the whole response: a run may take longer.
    deployment = ScriptedDeployment(hold=True)
    app = _app(deployment, keepalive=0.1)
    app.config["RESPONSE_TIMEOUT"] = 0.2
    async with app.test_client().request("/api/run", query_string={"prompt": "x"}) as conn:
        await conn.send_complete()
        await _read_until(conn, b": keepalive", 3)  # at least 0.3 s after the first progress
        deployment.release.set()
        rest = await _read_to_end(conn)
    assert b"event: result" in rest


async def test_ndjson_keeps_its_exact_media_type() -> None:
    client = _app(ScriptedDeployment()).test_client()
    async with client.request("/api/run", query_string={"prompt": "x", "format": "ndjson"}) as c:
        await c.send_complete()
        body = await _read_to_end(c)
        assert c.headers["Content-Type"] == "application/x-ndjson"
    assert [json.loads(line)["type"] for line in body.splitlines()] == [
        "progress",
        "progress",
        "result",
    ]


async def test_a_client_disconnect_closes_the_run() -> None:
    deployment = ScriptedDeployment(hold=True)
    client = _app(deployment).test_client()
    async with client.request("/api/run", query_string={"prompt": "x"}) as conn:
        await conn.send_complete()
        await _read_until(conn, b"event: progress")
        assert not deployment.closed.is_set()
        await conn.disconnect()
        assert await _closed(deployment)
    deployment.release.set()


async def test_the_hook_gets_quarts_request_inside_the_request_context() -> None:
    seen: list[tuple[Any, Any]] = []

    def authorize(request: quart.Request) -> None:
        seen.append((request, quart.request._get_current_object()))  # type: ignore[attr-defined]
        if request.headers.get("authorization") != "Bearer k":
            raise AccessDenied(401, "Sign in first.")

    client = _app(ScriptedDeployment(), authorize=authorize).test_client()
    denied = await client.get("/api/run", query_string={"prompt": "x"})
    allowed = await client.get(
        "/api/run", query_string={"prompt": "x"}, headers={"Authorization": "Bearer k"}
    )
    assert denied.status_code == 401
    assert (await denied.get_json())["error"]["message"] == "Sign in first."
    assert allowed.status_code == 200
    request, current = seen[0]
    assert isinstance(request, quart.Request)
    assert request is current


async def test_a_bad_parameter_gets_400_with_the_json_error() -> None:
    client = _app(ScriptedDeployment()).test_client()
    response = await client.get("/api/run", query_string={"prompt": "x" * 21})
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert await response.get_json() == {
        "error": {
            "code": "invalid_parameter",
            "message": "parameter 'prompt' is longer than 20 characters",
            "request_id": response.headers["X-Request-ID"],
        }
    }


async def test_a_declared_oversized_body_gets_413() -> None:
    deployment = ScriptedDeployment()
    client = _app(deployment, max_upload_bytes=1000).test_client()
    response = await client.post(
        "/api/run", data=b"x" * 2000, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    error = (await response.get_json())["error"]
    assert (error["code"], error["message"]) == (
        "payload_too_large",
        "request body exceeds 1000 bytes",
    )
    assert deployment.calls == []


async def test_an_undeclared_oversized_body_gets_413_while_it_arrives() -> None:
    deployment = ScriptedDeployment()
    client = _app(deployment, max_upload_bytes=1000).test_client()
    headers = {"Content-Type": "application/json"}
    async with client.request("/api/run", method="POST", headers=headers) as conn:
        for _ in range(3):  # the body is never completed: the limit ends the read
            await conn.send(b"x" * 500)
        body = await _read_to_end(conn)
        assert conn.status_code == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert deployment.calls == []


async def test_every_path_under_the_prefix_is_the_proxys() -> None:
    client = _app(ScriptedDeployment()).test_client()
    health = await client.get("/api/health")
    head = await client.head("/api/health")
    missing = await client.get("/api/nothing")
    wrong = await client.delete("/api/run")
    assert health.status_code == 200
    assert (await health.get_json())["status"] == "ok"
    assert head.status_code == 200  # the server drops the body of a HEAD answer
    assert head.headers["Content-Length"] == health.headers["Content-Length"]
    assert missing.status_code == 404
    assert (await missing.get_json())["error"]["code"] == "not_found"
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "GET, POST"

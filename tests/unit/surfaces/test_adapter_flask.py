"""The Flask blueprint: streaming through Flask's test client, hooks in the request context."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import flask
import pytest
from flask import Flask
from flask.testing import FlaskClient

from ikproxy.adapters.flask import blueprint
from ikproxy.policy import AccessDenied, Param, TokenBucket
from ikproxy.proxy import Proxy
from tests.support.deployments import ScriptedDeployment
from tests.support.http import error_of, read_until

PARAMS = {"prompt": Param(str, required=True, max_length=20)}
#: A stream that does not stream gets its run released after this long, and fails.
WATCHDOG = 5.0


@pytest.fixture
def deployment() -> Iterator[ScriptedDeployment]:
    deployment = ScriptedDeployment(hold=True)
    yield deployment
    deployment.release.set()


def _client(deployment: Any, **options: Any) -> FlaskClient:
    options.setdefault("parameters", PARAMS)
    options.setdefault("rate_limit", None)
    app = Flask(__name__)
    app.register_blueprint(blueprint(deployment, url_prefix="/api", **options))
    return app.test_client()


def test_events_arrive_while_the_run_is_held(deployment: ScriptedDeployment) -> None:
    watchdog = threading.Timer(WATCHDOG, deployment.release.set)
    watchdog.start()
    try:
        response = _client(deployment).get("/api/run", query_string={"prompt": "a cat"})
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert "Content-Length" not in response.headers
        chunks = iter(response.response)
        head = read_until(chunks, b"event: progress", 2)
        released_early = deployment.release.is_set()
        deployment.release.set()
        rest = b"".join(chunks)
    finally:
        watchdog.cancel()
    assert not released_early, "the first events waited for the end of the run"
    assert b"event: result" not in head
    assert rest.count(b"event: result") == 1
    assert deployment.closed.wait(5)


def test_closing_the_response_closes_the_run(deployment: ScriptedDeployment) -> None:
    response = _client(deployment).get("/api/run", query_string={"prompt": "a cat"})
    read_until(iter(response.response), b"event: progress")
    assert not deployment.closed.is_set()
    response.close()
    assert deployment.closed.wait(5), "the run went on after the client left"
    assert not deployment.release.is_set()


def test_hooks_run_inside_the_request_context(deployment: ScriptedDeployment) -> None:
    seen: dict[str, Any] = {}

    def authorize(request: Any) -> None:
        seen["context"] = flask.has_request_context()
        seen["same"] = request is flask.request._get_current_object()  # type: ignore[attr-defined]
        seen["path"] = flask.request.path
        flask.g.user = "ada"
        if flask.request.headers.get("Authorization") != "Bearer k":
            raise AccessDenied(401, "Bearer key required.")

    def rate_limit_key(request: Any) -> str:
        seen["user"] = flask.g.user
        return str(flask.g.user)

    deployment.release.set()
    client = _client(
        deployment, authorize=authorize, rate_limit=TokenBucket(), rate_limit_key=rate_limit_key
    )
    refused = client.get("/api/run", query_string={"prompt": "x"})
    assert error_of(refused) == (401, "unauthenticated", "Bearer key required.")
    assert seen == {"context": True, "same": True, "path": "/api/run"}

    allowed = client.get(
        "/api/run", query_string={"prompt": "x"}, headers={"Authorization": "Bearer k"}
    )
    assert allowed.status_code == 200
    assert b"event: result" in allowed.get_data()
    assert seen["user"] == "ada"


def test_a_post_body_is_read_from_the_request_stream(deployment: ScriptedDeployment) -> None:
    deployment.release.set()
    response = _client(deployment).post(
        "/api/run", json={"prompt": "a dog"}, headers={"Accept": "application/x-ndjson"}
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.get_data().splitlines()]
    assert lines[-1]["type"] == "result"
    assert deployment.calls[0]["parameters"] == {"prompt": "a dog"}


def test_400_names_the_missing_parameter(deployment: ScriptedDeployment) -> None:
    response = _client(deployment).get("/api/run")
    assert error_of(response) == (400, "invalid_parameter", "missing required parameter 'prompt'")
    assert response.get_json()["error"]["request_id"] == response.headers["X-Request-ID"]
    assert deployment.calls == []


def test_413_before_reading_a_body_over_the_limit(deployment: ScriptedDeployment) -> None:
    response = _client(deployment, max_upload_bytes=10).post(
        "/api/run", data=json.dumps({"prompt": "a cat"}), content_type="application/json"
    )
    assert error_of(response) == (413, "payload_too_large", "request body exceeds 10 bytes")
    assert deployment.calls == []


def test_every_path_and_method_reaches_the_core(deployment: ScriptedDeployment) -> None:
    client = _client(deployment)
    assert client.get("/api/health").get_json()["status"] == "ok"
    assert error_of(client.get("/api/")) == (404, "not_found", "no such endpoint: /")
    assert error_of(client.get("/api/nope/x")) == (404, "not_found", "no such endpoint: /nope/x")
    options = client.options("/api/run")
    assert error_of(options) == (405, "method_not_allowed", "method OPTIONS not allowed on /run")
    assert options.headers["Allow"] == "GET, POST"


def test_the_blueprint_keeps_its_name_prefix_and_proxy(deployment: ScriptedDeployment) -> None:
    bp = blueprint(deployment, name="ai", url_prefix="/ai", rate_limit=None)
    assert (bp.name, bp.url_prefix) == ("ai", "/ai")
    assert isinstance(bp.proxy, Proxy)
    assert bp.proxy.deployment is deployment
    assert bp.proxy.policy.rate_limit is None

"""The proxy core through the mountable ASGI app: routing, policy, statuses, bodies."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ikproxy import ImageIO, InvalidParameter
from ikproxy.asgi import create_app
from ikproxy.browser import process_readable_stream_sync
from ikproxy.errors import AuthenticationFailed, UpstreamConnectionError, WorkflowFailed
from ikproxy.policy import AccessDenied, Param, TokenBucket
from tests.support.deployments import ScriptedDeployment
from tests.support.http import error_of
from tests.support.images import png as _png
from tests.support.servers import serving

PARAMS: dict[str, Any] = {
    "prompt": Param(str, required=True, max_length=20),
    "steps": Param(int, minimum=1, maximum=50),
    "strength": float,
    "hd": bool,
}


@pytest.fixture
def deployment() -> ScriptedDeployment:
    return ScriptedDeployment()


def _app(deployment: Any, **options: Any) -> Starlette:
    options.setdefault("parameters", PARAMS)
    options.setdefault("rate_limit", None)
    return Starlette(routes=[Mount("/api", app=create_app(deployment, **options))])


def _client(deployment: Any, **options: Any) -> TestClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TestClient(_app(deployment, **options))


@pytest.fixture
def client(deployment: ScriptedDeployment) -> Iterator[TestClient]:
    with _client(deployment) as client:
        yield client


# -- success paths --------------------------------------------------------------


def test_get_streams_sse_with_the_documented_headers(
    client: TestClient, deployment: ScriptedDeployment
) -> None:
    response = client.get("/api/run", params={"prompt": "a cat", "steps": "3", "hd": "true"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["ikproxy-protocol"] == "1"
    results = process_readable_stream_sync([response.content])
    assert results.get_output(0).to_json() == {"answer": {"value": 42}}
    assert deployment.calls[0]["parameters"] == {"prompt": "a cat", "steps": 3, "hd": True}


def test_the_app_never_sets_a_connection_header(client: TestClient) -> None:
    # TestClient adds no headers of its own, so these are exactly the app's.
    response = client.get("/api/run", params={"prompt": "a"})
    assert "connection" not in response.headers


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"params": {"prompt": "a", "format": "ndjson"}}, "application/x-ndjson"),
        (
            {"params": {"prompt": "a"}, "headers": {"Accept": "application/x-ndjson"}},
            "application/x-ndjson",
        ),
        (
            {"params": {"prompt": "a"}, "headers": {"Accept": "text/event-stream"}},
            "text/event-stream; charset=utf-8",
        ),
        ({"params": {"prompt": "a"}}, "text/event-stream; charset=utf-8"),
    ],
)
def test_content_negotiation(client: TestClient, kwargs: dict[str, Any], expected: str) -> None:
    response = client.get("/api/run", **kwargs)
    assert response.headers["content-type"] == expected
    assert len(process_readable_stream_sync([response.content])) == 1


def test_post_json_with_typed_values_and_a_data_url_image(
    client: TestClient, deployment: ScriptedDeployment
) -> None:
    png = _png()
    image = "data:image/png;base64," + base64.b64encode(png).decode()
    response = client.post("/api/run", json={"prompt": "x", "strength": 2, "image": image})
    assert response.status_code == 200
    call = deployment.calls[0]
    assert call["parameters"] == {"prompt": "x", "strength": 2.0}
    assert call["inputs"] == [ImageIO(png)]


def test_post_multipart_with_an_upload(client: TestClient, deployment: ScriptedDeployment) -> None:
    png = _png()
    response = client.post(
        "/api/run", data={"prompt": "x", "steps": "7"}, files={"image": ("a.png", png, "image/png")}
    )
    assert response.status_code == 200, response.text
    assert deployment.calls[0]["inputs"] == [ImageIO(png)]
    assert deployment.calls[0]["parameters"] == {"prompt": "x", "steps": 7}


def test_post_urlencoded_form(client: TestClient, deployment: ScriptedDeployment) -> None:
    response = client.post("/api/run", data={"prompt": "x"})
    assert response.status_code == 200
    assert deployment.calls[0]["parameters"] == {"prompt": "x"}


def test_fixed_parameters_and_task_cannot_be_overridden() -> None:
    deployment = ScriptedDeployment()
    with _client(deployment, fixed_parameters={"model": "big"}, task="generate") as client:
        assert client.get("/api/run", params={"prompt": "x"}).status_code == 200
        response = client.get("/api/run", params={"prompt": "x", "model": "small"})
    assert error_of(response) == (
        400,
        "invalid_parameter",
        "unknown parameter 'model' (allowed: hd, prompt, steps, strength)",
    )
    assert deployment.calls == [
        {"inputs": [], "parameters": {"prompt": "x", "model": "big"}, "task": "generate"}
    ]


def test_health_and_404_and_405(client: TestClient) -> None:
    health = client.get("/api/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["protocol"] == 1
    assert error_of(client.get("/api/nope")) == (404, "not_found", "no such endpoint: /nope")
    response = client.delete("/api/run")
    assert error_of(response) == (405, "method_not_allowed", "method DELETE not allowed on /run")
    assert response.headers["allow"] == "GET, POST"


# -- 400: parameters and inputs -----------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "missing required parameter 'prompt'"),
        (
            {"prompt": "x", "seed": "1"},
            "unknown parameter 'seed' (allowed: hd, prompt, steps, strength)",
        ),
        ({"prompt": "x" * 21}, "parameter 'prompt' is longer than 20 characters"),
        ({"prompt": "x", "steps": "many"}, "parameter 'steps' must be an integer"),
        ({"prompt": "x", "steps": "0"}, "parameter 'steps' must be at least 1"),
        ({"prompt": "x", "steps": "51"}, "parameter 'steps' must be at most 50"),
        ({"prompt": "x", "strength": "nan"}, "parameter 'strength' must be a number"),
        ({"prompt": "x", "hd": "maybe"}, "parameter 'hd' must be a boolean"),
        ({"prompt": "x", "format": "xml"}, "format must be 'sse' or 'ndjson'"),
    ],
)
def test_bad_query_parameters_get_400_naming_them(
    client: TestClient, deployment: ScriptedDeployment, params: dict[str, str], message: str
) -> None:
    assert error_of(client.get("/api/run", params=params)) == (400, "invalid_parameter", message)
    assert deployment.calls == []


def test_a_repeated_parameter_is_refused(client: TestClient) -> None:
    response = client.get("/api/run?prompt=a&prompt=b")
    assert error_of(response) == (
        400,
        "invalid_parameter",
        "parameter 'prompt' given more than once",
    )


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        (b"{nope", 400, "bad_request", "request body is not valid JSON"),
        (b"[1]", 400, "bad_request", "request body must be a JSON object"),
        (b'{"prompt": 5}', 400, "invalid_parameter", "parameter 'prompt' must be a string"),
        (
            b'{"prompt": "x", "steps": true}',
            400,
            "invalid_parameter",
            "parameter 'steps' must be an integer",
        ),
        (
            b'{"prompt": "x", "image": 5}',
            400,
            "invalid_input",
            "'image' must be a data URL or base64 string",
        ),
        (b'{"prompt": "x", "image": "%%%"}', 400, "invalid_input", "'image' is not valid base64"),
        (
            b'{"prompt": "x", "image": "aGVsbG8="}',
            415,
            "unsupported_media_type",
            "the upload is not a supported image",
        ),
    ],
)
def test_bad_json_bodies(
    client: TestClient, body: bytes, status: int, code: str, message: str
) -> None:
    response = client.post("/api/run", content=body, headers={"Content-Type": "application/json"})
    assert error_of(response) == (status, code, message)


def test_too_many_images(client: TestClient) -> None:
    png = base64.b64encode(_png()).decode()
    response = client.post("/api/run", json={"prompt": "x", "image": [png, png]})
    assert error_of(response) == (400, "invalid_input", "too many images: at most 1 per request")


def test_an_upload_that_is_not_an_image_gets_415(client: TestClient) -> None:
    response = client.post(
        "/api/run", data={"prompt": "x"}, files={"image": ("a.png", b"MZ\x90\x00", "image/png")}
    )
    assert error_of(response) == (
        415,
        "unsupported_media_type",
        "the upload is not a supported image",
    )


def test_an_unsupported_body_type_gets_415(client: TestClient) -> None:
    response = client.post("/api/run", content=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


# -- 413: size limits ------------------------------------------------------------------


def test_a_declared_oversized_body_gets_413_before_reading(deployment: ScriptedDeployment) -> None:
    with _client(deployment, max_upload_bytes=1000) as client:
        response = client.post(
            "/api/run", content=b"x" * 2000, headers={"Content-Type": "application/json"}
        )
    assert error_of(response) == (413, "payload_too_large", "request body exceeds 1000 bytes")


def test_an_undeclared_oversized_body_gets_413_while_reading(
    deployment: ScriptedDeployment,
) -> None:
    read: list[int] = []

    def body() -> Iterator[bytes]:
        for _ in range(100):
            read.append(1)
            yield b"x" * 500

    with _client(deployment, max_upload_bytes=1000) as client:
        response = client.post(
            "/api/run", content=body(), headers={"Content-Type": "application/json"}
        )
    assert error_of(response) == (413, "payload_too_large", "request body exceeds 1000 bytes")
    assert deployment.calls == []


# -- 401 / 403 / 429: hooks ------------------------------------------------------------------


def test_authorize_hook_gets_the_framework_request(deployment: ScriptedDeployment) -> None:
    seen: list[Any] = []

    def authorize(request: Request) -> bool:
        seen.append(request)
        return request.headers.get("authorization") == "Bearer k"

    with _client(deployment, authorize=authorize) as client:
        denied = client.get("/api/run", params={"prompt": "x"})
        allowed = client.get(
            "/api/run", params={"prompt": "x"}, headers={"Authorization": "Bearer k"}
        )
    assert error_of(denied) == (403, "forbidden", "Not allowed.")
    assert allowed.status_code == 200
    assert isinstance(seen[0], Request)
    assert len(deployment.calls) == 1


def test_async_authorize_hook_raising_401(deployment: ScriptedDeployment) -> None:
    async def authorize(request: Request) -> None:
        if "authorization" not in request.headers:
            raise AccessDenied(401, "Sign in first.")

    with _client(deployment, authorize=authorize) as client:
        response = client.get("/api/run", params={"prompt": "x"})
    assert error_of(response) == (401, "unauthenticated", "Sign in first.")


def test_rate_limit_gives_429_with_retry_after(deployment: ScriptedDeployment) -> None:
    bucket = TokenBucket(rate=0.1, burst=2)
    with _client(deployment, rate_limit=bucket, rate_limit_key=lambda r: "one-key") as client:
        codes = [client.get("/api/run", params={"prompt": "x"}).status_code for _ in range(2)]
        limited = client.get("/api/run", params={"prompt": "x"})
    assert codes == [200, 200]
    assert error_of(limited) == (429, "rate_limited", "too many requests: retry in 10 s")
    assert limited.headers["retry-after"] == "10"


def test_token_bucket_refills_with_time() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=1)
    bucket.clock = lambda: now[0]
    assert bucket.acquire("a") is None
    assert bucket.acquire("a") == pytest.approx(0.5)
    assert bucket.acquire("b") is None
    now[0] = 0.5
    assert bucket.acquire("a") is None


# -- the upstream refuses at submission: a real HTTP error, not a 200 ----------------------


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (InvalidParameter("unknown parameter 'x' (valid: a, b)"), 400, "invalid_parameter"),
        (AuthenticationFailed("token tok-123 refused"), 502, "unauthorized"),
        (WorkflowFailed("oops at /srv/secret"), 502, "workflow_failed"),
        (UpstreamConnectionError("https://secret.example down"), 502, "upstream_failed"),
        (RuntimeError("boom"), 500, "internal"),
    ],
)
def test_a_refused_submission_is_a_real_http_error(exc: Exception, status: int, code: str) -> None:
    deployment = ScriptedDeployment(refuse=exc)
    with _client(deployment) as client:
        response = client.get("/api/run", params={"prompt": "x"})
    assert response.status_code == status
    body = response.json()["error"]
    assert body["code"] == code
    assert str(exc) not in response.text
    assert body["request_id"] == response.headers["x-request-id"]


def test_a_safe_request_id_is_kept_and_an_unsafe_one_replaced(client: TestClient) -> None:
    kept = client.get("/api/run", params={"prompt": "x"}, headers={"X-Request-ID": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    replaced = client.get("/api/run", params={"prompt": "x"}, headers={"X-Request-ID": "a b\x01"})
    assert replaced.headers["x-request-id"] != "a b\x01"
    assert len(replaced.headers["x-request-id"]) == 32


# The streaming tests run on a real server: they read a stream while its run is held.


def test_progress_arrives_before_the_run_ends() -> None:
    deployment = ScriptedDeployment(hold=True)
    with (
        serving(_app(deployment)) as client,
        client.stream("GET", "/api/run", params={"prompt": "x"}) as response,
    ):
        chunks = response.iter_bytes()
        seen = b""
        while seen.count(b"event: progress") < 2:
            seen += next(chunks)
        assert b"event: result" not in seen
        deployment.release.set()
        rest = b"".join(chunks)
    assert b"event: result" in rest


def test_closing_the_response_closes_the_run() -> None:
    deployment = ScriptedDeployment(hold=True)
    with serving(_app(deployment)) as client:
        with client.stream("GET", "/api/run", params={"prompt": "x"}) as response:
            chunks = response.iter_bytes()
            while b"event: progress" not in next(chunks):
                pass
        assert deployment.closed.wait(timeout=2)
    deployment.release.set()


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
def test_gzip_middleware_neither_buffers_nor_mangles_the_stream(fmt: str) -> None:
    deployment = ScriptedDeployment(hold=True)
    app = _app(deployment)
    app.add_middleware(GZipMiddleware, minimum_size=10)
    with (
        serving(app) as client,
        client.stream(
            "GET",
            "/api/run",
            params={"prompt": "x", "format": fmt},
            headers={"Accept-Encoding": "gzip"},
        ) as response,
    ):
        chunks = response.iter_bytes()  # decompressed
        head = b""
        while head.count(b"progress") < 2:
            head += next(chunks)
        assert b"result" not in head  # not held back until the end
        deployment.release.set()
        body = head + b"".join(chunks)
    results = process_readable_stream_sync([body])
    assert len(results) == 1
    # Starlette's GZipMiddleware leaves SSE alone, and compresses NDJSON flushing each chunk.
    expected = None if fmt == "sse" else "gzip"
    assert response.headers.get("content-encoding") == expected


def test_static_module_is_served(client: TestClient) -> None:
    response = client.get("/api/ikproxy.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert b"processStreamingResponse" in response.content


def test_json_error_bodies_are_parseable(client: TestClient) -> None:
    response = client.get("/api/run")
    assert json.loads(response.content) == {
        "error": {
            "code": "invalid_parameter",
            "message": "missing required parameter 'prompt'",
            "request_id": response.headers["x-request-id"],
        }
    }


class _AsyncLimiter(TokenBucket):
    """A limiter whose `acquire` is async, as one backed by a shared store would be."""

    async def acquire(self, key: str) -> float | None:  # type: ignore[override]
        return super().acquire(key)


def test_async_rate_limit_key_and_async_limiter(deployment: ScriptedDeployment) -> None:
    keys: list[str] = []

    async def key(request: Request) -> str:
        keys.append(request.headers["x-user"])
        return request.headers["x-user"]

    limiter = _AsyncLimiter(rate=0.001, burst=1)
    with _client(deployment, rate_limit=limiter, rate_limit_key=key) as client:
        first = client.get("/api/run", params={"prompt": "x"}, headers={"X-User": "ann"})
        second = client.get("/api/run", params={"prompt": "x"}, headers={"X-User": "ann"})
        other = client.get("/api/run", params={"prompt": "x"}, headers={"X-User": "bob"})
    assert (first.status_code, second.status_code, other.status_code) == (200, 429, 200)
    assert keys == ["ann", "ann", "bob"]

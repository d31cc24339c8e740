"""The Starlette routes and the FastAPI router, through Starlette's TestClient, and under
uvicorn for the tests that read a stream while its run goes on."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ikproxy.adapters.starlette import fastapi_router, mount, router
from ikproxy.policy import AccessDenied, Param, TokenBucket
from tests.support.deployments import ScriptedDeployment
from tests.support.http import error_of, read_until
from tests.support.servers import serving

PARAMS = {"prompt": Param(str, required=True, max_length=20)}


def _client(app: Any) -> TestClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TestClient(app)


def _starlette_app(deployment: Any, **options: Any) -> Starlette:
    options.setdefault("parameters", PARAMS)
    options.setdefault("rate_limit", None)
    return Starlette(routes=[mount("/api", deployment, **options)])


def _fastapi_app(deployment: Any, **options: Any) -> FastAPI:
    options.setdefault("parameters", PARAMS)
    options.setdefault("rate_limit", None)
    app = FastAPI()
    app.include_router(fastapi_router(deployment, prefix="/api", **options))
    return app


def _starlette(deployment: Any, **options: Any) -> TestClient:
    return _client(_starlette_app(deployment, **options))


def _fastapi(deployment: Any, **options: Any) -> TestClient:
    return _client(_fastapi_app(deployment, **options))


# -- both: streaming, disconnect, 400, 413 -------------------------------------------

BOTH = pytest.mark.parametrize("make", [_starlette, _fastapi], ids=["starlette", "fastapi"])
#: The streaming tests run the app under uvicorn (see `serving`).
BOTH_APPS = pytest.mark.parametrize(
    "make_app", [_starlette_app, _fastapi_app], ids=["starlette", "fastapi"]
)


@BOTH_APPS
def test_progress_streams_before_the_run_ends(make_app: Any) -> None:
    deployment = ScriptedDeployment(hold=True)
    with (
        serving(make_app(deployment)) as client,
        client.stream("GET", "/api/run", params={"prompt": "x"}) as response,
    ):
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["x-accel-buffering"] == "no"
        chunks = response.iter_bytes()
        seen = read_until(chunks, b"event: progress", 2)
        assert b"event: result" not in seen
        deployment.release.set()
        rest = b"".join(chunks)
    assert rest.count(b"event: result") == 1


@BOTH_APPS
def test_a_client_disconnect_closes_the_run(make_app: Any) -> None:
    deployment = ScriptedDeployment(hold=True)
    with serving(make_app(deployment)) as client:
        with client.stream("GET", "/api/run", params={"prompt": "x"}) as response:
            # Keep the iterator: a discarded one closes httpx's connection, a disconnect.
            chunks = response.iter_bytes()
            read_until(chunks, b"event: progress")
            assert not deployment.closed.is_set()
        assert deployment.closed.wait(timeout=5)
    deployment.release.set()


@BOTH
def test_a_bad_parameter_gets_400(make: Any) -> None:
    with make(ScriptedDeployment()) as client:
        response = client.get("/api/run", params={"prompt": "x" * 21})
    assert error_of(response, request_id=True) == (
        400,
        "invalid_parameter",
        "parameter 'prompt' is longer than 20 characters",
    )


@BOTH
def test_an_undeclared_oversized_body_gets_413_while_it_arrives(make: Any) -> None:
    deployment = ScriptedDeployment()

    def body() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 500

    with make(deployment, max_upload_bytes=1000) as client:
        response = client.post(
            "/api/run", content=body(), headers={"Content-Type": "application/json"}
        )
    assert error_of(response, request_id=True) == (
        413,
        "payload_too_large",
        "request body exceeds 1000 bytes",
    )
    assert deployment.calls == []


@BOTH
def test_a_plain_hook_gets_the_starlette_request(make: Any) -> None:
    seen: list[Any] = []

    def authorize(request: StarletteRequest) -> bool:
        seen.append(request)
        return request.headers.get("authorization") == "Bearer k"

    with make(ScriptedDeployment(), authorize=authorize) as client:
        denied = client.get("/api/run", params={"prompt": "x"})
        allowed = client.get(
            "/api/run", params={"prompt": "x"}, headers={"Authorization": "Bearer k"}
        )
    assert error_of(denied, request_id=True) == (403, "forbidden", "Not allowed.")
    assert allowed.status_code == 200
    assert isinstance(seen[0], StarletteRequest)


@BOTH
def test_every_path_under_the_prefix_is_the_proxys(make: Any) -> None:
    with make(ScriptedDeployment()) as client:
        health = client.get("/api/health")
        head = client.head("/api/health")
        missing = client.get("/api/nothing")
        wrong = client.put("/api/run")
    assert health.json()["status"] == "ok"
    assert head.status_code == 200
    assert head.content == b""
    assert error_of(missing, request_id=True) == (404, "not_found", "no such endpoint: /nothing")
    assert error_of(wrong, request_id=True) == (
        405,
        "method_not_allowed",
        "method PUT not allowed on /run",
    )
    assert wrong.headers["allow"] == "GET, POST"


def test_router_mounts_anywhere_in_a_starlette_app() -> None:
    app = Starlette(
        routes=[
            Mount("/v1", routes=[Mount("/ik", app=router(ScriptedDeployment(), parameters=PARAMS))])
        ]
    )
    with _client(app) as client:
        response = client.get("/v1/ik/run", params={"prompt": "x"})
    assert response.status_code == 200
    assert response.text.count("event: result") == 1


# -- FastAPI: dependencies as hooks ----------------------------------------------------


def _verify(request: Request) -> str:
    if request.headers.get("authorization") != "Bearer k":
        raise HTTPException(401, "Sign in first.", headers={"WWW-Authenticate": "Bearer"})
    return "user-1"


def test_a_dependency_refusal_keeps_its_status_and_headers_with_our_body() -> None:
    deployment = ScriptedDeployment()
    with _fastapi(deployment, authorize=Depends(_verify)) as client:
        denied = client.get("/api/run", params={"prompt": "x"}, headers={"X-Request-ID": "r-7"})
        allowed = client.get(
            "/api/run", params={"prompt": "x"}, headers={"Authorization": "Bearer k"}
        )
    assert denied.json() == {
        "error": {"code": "unauthenticated", "message": "Sign in first.", "request_id": "r-7"}
    }
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"] == "Bearer"
    assert denied.headers["x-request-id"] == "r-7"
    assert allowed.status_code == 200
    assert len(deployment.calls) == 1


def test_a_dependency_returning_false_gets_403_from_the_core() -> None:
    with _fastapi(ScriptedDeployment(), authorize=Depends(lambda: False)) as client:
        response = client.get("/api/run", params={"prompt": "x"})
    assert error_of(response, request_id=True) == (403, "forbidden", "Not allowed.")


def test_a_dependency_raising_access_denied() -> None:
    def deny() -> None:
        raise AccessDenied(403, "Upgrade your plan.")

    with _fastapi(ScriptedDeployment(), authorize=Depends(deny)) as client:
        response = client.get("/api/run", params={"prompt": "x"})
    assert error_of(response, request_id=True) == (403, "forbidden", "Upgrade your plan.")


def test_a_dependency_status_without_a_protocol_code_gets_its_phrase() -> None:
    def unpaid() -> None:
        raise HTTPException(402)

    with _fastapi(ScriptedDeployment(), authorize=Depends(unpaid)) as client:
        response = client.get("/api/run", params={"prompt": "x"})
    assert error_of(response, request_id=True) == (402, "payment_required", "Payment Required")


def test_the_authorize_dependency_guards_run_only() -> None:
    with _fastapi(ScriptedDeployment(), authorize=Depends(_verify)) as client:
        assert client.get("/api/health").status_code == 200
        assert client.get("/api/nothing").status_code == 404
        assert client.get("/api/run", params={"prompt": "x"}).status_code == 401


def test_router_dependencies_run_before_every_endpoint() -> None:
    deployment = ScriptedDeployment()
    with _fastapi(deployment, dependencies=[Depends(_verify)]) as client:
        health = client.get("/api/health")
        run = client.post("/api/run", json={"prompt": "x"})
    assert error_of(health, request_id=True) == (401, "unauthenticated", "Sign in first.")
    assert error_of(run, request_id=True) == (401, "unauthenticated", "Sign in first.")
    assert deployment.calls == []


def test_a_rate_limit_key_dependency_picks_the_bucket() -> None:
    def client_key(request: Request) -> str:
        return request.headers.get("x-user", "anonymous")

    bucket = TokenBucket(rate=0.001, burst=1)
    with _fastapi(
        ScriptedDeployment(), rate_limit=bucket, rate_limit_key=Depends(client_key)
    ) as client:
        first = client.get("/api/run", params={"prompt": "x"}, headers={"X-User": "a"})
        again = client.get("/api/run", params={"prompt": "x"}, headers={"X-User": "a"})
        other = client.get("/api/run", params={"prompt": "x"}, headers={"X-User": "b"})
    assert first.status_code == 200
    assert error_of(again, request_id=True)[:2] == (429, "rate_limited")
    assert other.status_code == 200


def test_the_openapi_schema_lists_run_and_health() -> None:
    app = FastAPI()
    app.include_router(fastapi_router(ScriptedDeployment(), prefix="/api", parameters=PARAMS))
    schema = app.openapi()
    assert set(schema["paths"]) == {"/api/run", "/api/health"}
    run = schema["paths"]["/api/run"]
    assert set(run) == {"get", "post"}
    assert run["get"]["parameters"][0] == {
        "name": "prompt",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "maxLength": 20},
    }
    assert set(run["get"]["responses"]["200"]["content"]) == {
        "text/event-stream",
        "application/x-ndjson",
    }
    body = run["post"]["requestBody"]["content"]
    assert set(body) == {
        "application/json",
        "multipart/form-data",
        "application/x-www-form-urlencoded",
    }
    assert body["application/json"]["schema"]["required"] == ["prompt"]
    assert run["post"]["responses"]["413"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ProxyError"
    }
    assert set(schema["paths"]["/api/health"]) == {"get"}

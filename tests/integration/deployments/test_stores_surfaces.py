"""Every surface passes `store=` (and `max_active_runs=`) through to the core.

For each, one client key's only token is taken straight from a real Redis
first: the surface's request must then be refused with 429, which it can only
know from the shared store.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import types
import warnings
from typing import Any

import httpx
import pytest

from ikproxy.policy import TokenBucket
from ikproxy.stores import RedisStore
from tests.support.deployments import ScriptedDeployment
from tests.support.servers import ROOT, free_port, running_server

KEY = "the-client"


def _key(request: Any) -> str:
    return KEY


@pytest.fixture
def store(redis_url: str) -> RedisStore:
    prefix = f"s{secrets.token_hex(4)}"

    async def take_the_only_token() -> None:
        other = RedisStore(redis_url, prefix=prefix)
        assert await other.acquire_token(KEY, rate=0.001, burst=1) is None
        await other.aclose()

    asyncio.run(take_the_only_token())
    return RedisStore(redis_url, prefix=prefix)


def _options(store: RedisStore) -> dict[str, Any]:
    bucket = TokenBucket(rate=0.001, burst=1)
    return {
        "store": store,
        "rate_limit": bucket,
        "rate_limit_key": _key,
        "parameters": {"prompt": str},
    }


def _assert_limited(status: int, body: Any) -> None:
    assert status == 429
    assert body["error"]["code"] == "rate_limited"


def test_starlette_mount_router_and_fastapi(store: RedisStore) -> None:
    from fastapi import FastAPI
    from starlette.applications import Starlette
    from starlette.routing import Mount

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from ikproxy.adapters.starlette import fastapi_router, mount, router

    deployment = ScriptedDeployment()
    fastapi = FastAPI()
    fastapi.include_router(fastapi_router(deployment, prefix="/f", **_options(store)))
    apps = [
        Starlette(routes=[mount("/api", deployment, **_options(store))]),
        Starlette(routes=[Mount("/api", app=router(deployment, **_options(store)))]),
    ]
    for app, path in [(apps[0], "/api/run"), (apps[1], "/api/run"), (fastapi, "/f/run")]:
        with TestClient(app) as client:
            response = client.get(path, params={"prompt": "x"})
        _assert_limited(response.status_code, response.json())


def test_flask_blueprint(store: RedisStore) -> None:
    from flask import Flask

    from ikproxy.adapters.flask import blueprint

    app = Flask(__name__)
    app.register_blueprint(blueprint(ScriptedDeployment(), url_prefix="/api", **_options(store)))
    response = app.test_client().get("/api/run", query_string={"prompt": "x"})
    _assert_limited(response.status_code, response.get_json())


def test_django_urls_and_settings(store: RedisStore) -> None:
    from django.test import Client, override_settings

    import ikproxy.adapters.django
    from tests.unit.surfaces.test_adapter_django import _serving

    with _serving(ScriptedDeployment(), **_options(store)):
        response = Client().get("/api/run", {"prompt": "x"})
    _assert_limited(response.status_code, response.json())
    module = types.ModuleType("ikproxy_store_settings")
    module.STORE = store  # type: ignore[attr-defined]
    import sys

    sys.modules[module.__name__] = module
    try:
        config = {
            "DEPLOYMENT": ScriptedDeployment(),
            "POLICY": {"store": "ikproxy_store_settings.STORE", "max_active_runs": 3},
        }
        with override_settings(IKPROXY=config):
            urls = ikproxy.adapters.django.urls()
    finally:
        del sys.modules[module.__name__]
    assert urls.proxy.store is store
    assert urls.proxy.active_runs is not None
    assert urls.proxy.active_runs.limit == 3


@pytest.mark.anyio
async def test_quart_blueprint(store: RedisStore) -> None:
    from quart import Quart

    from ikproxy.adapters.quart import blueprint

    app = Quart(__name__)
    app.register_blueprint(blueprint(ScriptedDeployment(), url_prefix="/api", **_options(store)))
    response = await app.test_client().get("/api/run", query_string={"prompt": "x"})
    _assert_limited(response.status_code, await response.get_json())


def test_litestar_router(store: RedisStore) -> None:
    from litestar import Litestar
    from litestar.testing import TestClient

    from ikproxy.adapters.litestar import router

    app = Litestar(route_handlers=[router(ScriptedDeployment(), path="/api", **_options(store))])
    with TestClient(app) as client:
        response = client.get("/api/run", params={"prompt": "x"})
    _assert_limited(response.status_code, response.json())


def test_sanic_blueprint(redis_url: str) -> None:
    # Sanic has no in-process test client here: its own server, on the same store.
    prefix = f"s{secrets.token_hex(4)}"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "IKPROXY_TEST_REDIS": redis_url, "IKPROXY_TEST_PREFIX": prefix}
    port = free_port()
    args = ["-m", "sanic", "tests.support.store_app:sanic_app", "--factory", "--single-process"]
    with (
        running_server([*args, "--port", str(port)], ready="test server ready", env=env),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        headers = {"X-Client": "sanic"}
        statuses = [client.get("/api/run", params={"events": 1}, headers=headers) for _ in range(6)]
        capped = []

        async def fill_the_cap() -> None:
            other = RedisStore(redis_url, prefix=prefix)
            for slot in ("a", "b"):
                assert await other.acquire_slot("capped", slot, limit=2, ttl=30) is None
            await other.aclose()

        asyncio.run(fill_the_cap())
        capped.append(client.get("/api/run", params={"events": 1}, headers={"X-Client": "capped"}))
    assert [r.status_code for r in statuses] == [200] * 5 + [429]
    assert capped[0].status_code == 429
    assert capped[0].json()["error"]["code"] == "too_many_runs"

"""The app of the multi-process tests: every process builds it alike, on one Redis.

`IKPROXY_TEST_REDIS` is the Redis URL, `IKPROXY_TEST_PREFIX` the key prefix.
`create_app()` is the ASGI app (a uvicorn `--factory`), `flask_app()` the WSGI
one (gunicorn `'tests.support.store_app:flask_app()'`). Each response names the
process that served it in `X-Worker-Pid`. Rate limits and active-run caps are
per `X-Client` header, so that tests sharing the servers do not meet.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import anyio

from ikproxy import Progress, Results, TaskIO
from ikproxy.policy import TokenBucket
from ikproxy.stores import RedisStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class PacedDeployment:
    """Runs of `events` progress events `pace` seconds apart; `gate`: a file the result waits for."""

    async def run_stream(
        self, *inputs: Any, parameters: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncIterator[Progress]:
        params = dict(parameters or {})
        count = int(params.get("events", 3))
        pace = float(params.get("pace", 0.0))
        gate = params.get("gate")
        for index in range(count):
            yield Progress("STARTED", run_id="r", name=str(os.getpid()), fraction=index / count)
            if pace:
                await asyncio.sleep(pace)
        for _ in range(3000 if gate else 0):  # the test opens the gate: at most a minute
            if await anyio.Path(gate).exists():
                break
            await asyncio.sleep(0.02)
        yield Progress("SUCCESS", run_id="r", results=Results((TaskIO("events", count),)))


def _client_key(request: Any) -> str:
    return str(request.headers.get("x-client") or "anonymous")


def _options() -> dict[str, Any]:
    return {
        "parameters": {"events": int, "pace": float, "gate": str},
        "resume_window": float(os.environ.get("IKPROXY_TEST_WINDOW", "30")),
        "store": RedisStore(
            os.environ["IKPROXY_TEST_REDIS"], prefix=os.environ["IKPROXY_TEST_PREFIX"]
        ),
        "rate_limit": TokenBucket(rate=0.01, burst=5),
        "rate_limit_key": _client_key,
        "max_active_runs": 2,
        "keepalive": 1.0,
    }


def create_app() -> ASGIApp:
    from ikproxy.asgi import create_app as create_asgi_app

    inner = create_asgi_app(PacedDeployment(), **_options())
    pid = str(os.getpid()).encode()

    async def app(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-worker-pid", pid)]
            await send(message)

        await inner(scope, receive, send_with_pid)

    return app


def flask_app() -> Any:
    from flask import Flask, Response

    from ikproxy.adapters.flask import blueprint

    app = Flask(__name__)
    app.register_blueprint(blueprint(PacedDeployment(), url_prefix="", **_options()))

    @app.after_request
    def name_the_worker(response: Response) -> Response:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    return app


def sanic_app() -> Any:
    """The Sanic blueprint on the shared store (`python -m sanic ... --factory`)."""
    from sanic import Sanic

    from ikproxy.adapters.sanic import blueprint

    app: Any = Sanic("ikproxy_test_store_app")

    @app.after_server_start
    async def ready(app: Any) -> None:
        print("test server ready", flush=True)

    app.blueprint(blueprint(PacedDeployment(), url_prefix="/api", **_options()))
    return app

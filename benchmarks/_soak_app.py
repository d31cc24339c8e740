"""The apps `benchmarks/soak.py` serves: one slow run per stream, on every surface measured."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio

from ikproxy import Progress, Results, TaskIO
from ikproxy.asgi import create_app

EVENTS = 10  # progress events per stream
INTERVAL = 0.5  # seconds between them


class SlowDeployment:
    """Each run reports `EVENTS` progress events, `INTERVAL` seconds apart, then a result."""

    async def run_stream(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Progress]:
        for i in range(EVENTS):
            yield Progress("STARTED", (1000, 2000), run_id="r", uuid="u", fraction=i / EVENTS)
            await anyio.sleep(INTERVAL)
        results = Results((TaskIO("answer", {"value": 42}),), uuid="u")
        yield Progress("SUCCESS", (0, 0), run_id="r", uuid="u", fraction=1.0, results=results)

    async def run(self, *inputs: Any, **kwargs: Any) -> Results:  # pragma: no cover
        raise NotImplementedError


OPTIONS: dict[str, Any] = {"parameters": {"prompt": str}, "rate_limit": None, "keepalive": 30}

app = create_app(SlowDeployment(), **OPTIONS)


@functools.cache
def _litestar() -> Any:
    from litestar import Litestar

    from ikproxy.adapters.litestar import router

    return Litestar(route_handlers=[router(SlowDeployment(), path="/", **OPTIONS)])


@functools.cache
def _flask() -> Any:
    from flask import Flask

    from ikproxy.adapters.flask import blueprint

    flask_app = Flask(__name__)
    flask_app.register_blueprint(blueprint(SlowDeployment(), url_prefix="", **OPTIONS))
    return flask_app


@functools.cache
def _django() -> Any:
    import django
    from django.conf import settings
    from django.core.asgi import get_asgi_application

    settings.configure(
        DEBUG=False,
        SECRET_KEY="soak-only",
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
    )
    django.setup()
    return get_asgi_application()


@functools.cache
def _urlpatterns() -> list[Any]:
    from django.urls import include, path

    import ikproxy.adapters.django

    return [path("", include(ikproxy.adapters.django.urls(SlowDeployment(), **OPTIONS)))]


def __getattr__(name: str) -> Any:
    if name == "django_app":
        return _django()
    if name == "urlpatterns":
        return _urlpatterns()
    if name == "litestar_app":
        return _litestar()
    if name == "flask_app":
        return _flask()
    raise AttributeError(name)

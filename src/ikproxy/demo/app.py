"""The demo server: a page with a prompt, an upload, a live progress bar and the result.

Two layouts, one page:

* On the local demo deployment (`ikproxy.demo`: no account, no network) the
  deployment has two tasks and a proxy serves one task, so two proxy apps are
  mounted: `/api` runs `generate` (so `/api/run`, `/api/health`,
  `/api/ikproxy.js`) and `/api/edges` runs `edges` (`/api/edges/run`).
* On a SCALE deployment (`ikproxy serve`, or `IKOMIA_ENDPOINT` set), one proxy
  at `/api` runs the deployment's default task with an optional `prompt` and an
  optional image.

The page learns which from a JSON block in the HTML; the endpoint URL and the
token never reach it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from ikproxy.asgi import create_app
from ikproxy.deployments import Deployment, SupportsRunLog
from ikproxy.policy.limits import TokenBucket
from ikproxy.policy.params import Param
from ikproxy.telemetry import Telemetry

__all__ = ["MAX_PROMPT_LENGTH", "Tool", "app_from_env", "create_demo_app", "deployment_from_env"]

MAX_PROMPT_LENGTH = 500
MAX_UPLOAD_BYTES = 10 * 1024 * 1024

_CONFIG_MARK = "__IKPROXY_DEMO_CONFIG__"
_ASSETS = {
    "/demo.css": ("demo.css", "text/css; charset=utf-8"),
    "/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
}
# The page loads only its own files; images are data: or blob: URLs.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

Need = Literal["required", "optional", "none"]


@dataclass(frozen=True)
class Tool:
    """One form on the page: the endpoint it posts to and which fields it shows."""

    id: str
    label: str
    endpoint: str  # relative to the page, so the demo app can itself be mounted anywhere
    prompt: Need
    image: Need
    description: str


def _static(name: str) -> bytes:
    return resources.files("ikproxy").joinpath("static").joinpath(name).read_bytes()


def _prompt(required: bool) -> Param:
    return Param(str, required=required, max_length=MAX_PROMPT_LENGTH)


def _local_routes(
    deployment: Deployment, telemetry: Telemetry | None
) -> tuple[list[BaseRoute], list[Tool]]:
    limit = TokenBucket(rate=1.0, burst=20)
    # On workers, runs live in the shared store: resumable on any instance.
    shared: dict[str, Any] = {}
    if isinstance(deployment, SupportsRunLog):
        shared["resume_window"] = 60.0
    generate = create_app(
        deployment,
        telemetry=telemetry,
        task="generate",
        parameters={"prompt": _prompt(True), "seed": Param(int, minimum=0, maximum=2**32 - 1)},
        max_inputs=0,
        rate_limit=limit,
        **shared,
    )
    edges = create_app(
        deployment,
        telemetry=telemetry,
        task="edges",
        parameters={"strength": Param(float, minimum=0.1, maximum=10.0)},
        max_inputs=1,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        rate_limit=limit,
        **shared,
    )
    tools = [
        Tool(
            "generate",
            "Generate",
            "api/run",
            "required",
            "none",
            "Paint a picture from a prompt (20 steps, about 2 s).",
        ),
        Tool(
            "edges",
            "Find edges",
            "api/edges/run",
            "none",
            "required",
            "Upload a photo and get its edge map back.",
        ),
    ]
    # The more specific mount first: /api would otherwise answer /api/edges/run itself.
    return [Mount("/api/edges", app=edges), Mount("/api", app=generate)], tools


def _remote_routes(
    deployment: Deployment, telemetry: Telemetry | None
) -> tuple[list[BaseRoute], list[Tool]]:
    app = create_app(
        deployment,
        telemetry=telemetry,
        parameters={"prompt": _prompt(False)},
        max_inputs=1,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        rate_limit=TokenBucket(rate=0.5, burst=10),
    )
    tool = Tool(
        "run",
        "Run",
        "api/run",
        "optional",
        "optional",
        "Run the deployment with a prompt, an image, or both.",
    )
    return [Mount("/api", app=app)], [tool]


def create_demo_app(deployment: Deployment | None = None, *, metrics: bool = False) -> Starlette:
    """The demo app: the page at `/`, the proxy at `/api`.

    Without a deployment: the local demo deployment (`ikproxy.demo`); the demo's
    tasks on Celery workers (`ikproxy.demo.workers.deployment`) get the same
    layout. Any other deployment (a SCALE `Client`) gets the one-form layout;
    it is closed when the app shuts down. With `metrics`, its OpenTelemetry
    metrics are served as a Prometheus page at `/metrics/` (`ikproxy.demo.metrics`;
    ImportError without them).
    """
    telemetry: Telemetry | None = None
    extra: list[BaseRoute] = []
    if metrics:
        from ikproxy.demo.metrics import prometheus

        telemetry, metrics_app = prometheus()
        extra.append(Mount("/metrics", app=metrics_app))
    if deployment is None or isinstance(deployment, SupportsRunLog):
        if deployment is None:
            from ikproxy.demo.tasks import deployment as demo_deployment

            deployment = demo_deployment
        routes, tools = _local_routes(deployment, telemetry)
        backend = "local"
    else:
        routes, tools = _remote_routes(deployment, telemetry)
        backend = "scale"
    routes = extra + routes
    config = {
        "backend": backend,
        "maxPromptLength": MAX_PROMPT_LENGTH,
        "maxUploadBytes": MAX_UPLOAD_BYTES,
        "tools": [asdict(tool) for tool in tools],
    }
    page = _page(config)

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS)

    async def asset(request: Request) -> Response:
        name, media_type = _ASSETS[request.url.path]
        return Response(_static(name), media_type=media_type, headers=_SECURITY_HEADERS)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            aclose = getattr(deployment, "aclose", None)
            if aclose is not None:
                await aclose()

    page_routes: list[BaseRoute] = [Route("/", index, methods=["GET", "HEAD"])]
    page_routes += [Route(path, asset, methods=["GET", "HEAD"]) for path in _ASSETS]
    return Starlette(routes=page_routes + routes, lifespan=lifespan)


def _page(config: Mapping[str, Any]) -> bytes:
    """demo.html with the page configuration in its JSON block (`<` escaped for HTML)."""
    text = json.dumps(config, separators=(",", ":")).replace("<", "\\u003c")
    html = _static("demo.html").decode("utf-8")
    if _CONFIG_MARK not in html:  # pragma: no cover - a broken package
        raise RuntimeError("demo.html has no configuration block")
    return html.replace(_CONFIG_MARK, text).encode("utf-8")


def deployment_from_env(endpoint: str | None = None) -> Deployment | None:
    """A SCALE client for `endpoint` (or `IKOMIA_ENDPOINT`), or None for the local demo.

    The token comes from `IKOMIA_TOKEN`; a `ValueError` says so when it is missing.
    """
    endpoint = endpoint or os.environ.get("IKOMIA_ENDPOINT") or None
    if endpoint is None:
        return None
    from ikproxy.deployments.scale.client import Client

    return Client(endpoint)


def app_from_env() -> Starlette:
    """For `uvicorn --factory ikproxy._demo_app:app_from_env`: the local demo or SCALE."""
    return create_demo_app(deployment_from_env())

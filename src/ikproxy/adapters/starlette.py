"""The proxy as Starlette routes, and as a FastAPI router.

Starlette:

    from ikproxy.adapters.starlette import mount

    app = Starlette(routes=[mount("/api", deployment, parameters={"prompt": str})])

FastAPI:

    from ikproxy.adapters.starlette import fastapi_router

    app.include_router(fastapi_router(deployment, prefix="/api", authorize=Depends(verify_user)))

Both serve the same endpoints as `ikproxy.asgi.create_app` and hand every
request to the core; hooks receive the Starlette (FastAPI) `Request`.

With FastAPI, `authorize` and `rate_limit_key` may also be FastAPI
dependencies (`Depends(...)`); they then run on `/run` before the proxy, and
their return value is the hook's answer (`False` refuses with 403; for the
rate limit, the key). `dependencies=[Depends(...)]` run before every endpoint
of the router. A dependency that refuses the request (`HTTPException(401)`,
`AccessDenied`, ...) keeps its status, message and headers, but the body is
the proxy's JSON error (`{"error": {"code", "message", "request_id"}}`), so
browsers and `ikproxy.js` read every refusal the same way. The stream is the
core's bytes in a plain `StreamingResponse`: FastAPI's `EventSourceResponse`
would encode them again.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, Router

from ikproxy.asgi import ProxyEndpoint, proxy_request, to_starlette_response
from ikproxy.deployments import Deployment
from ikproxy.errors import HTTPError
from ikproxy.policy.config import Policy
from ikproxy.protocol import new_request_id
from ikproxy.proxy.core import Proxy, error_response
from ikproxy.proxy.openapi import FORMAT_PARAMETER, STATUS_DOCS, run_docs

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["fastapi_router", "mount", "router"]


def router(deployment: Deployment, *, policy: Policy | None = None, **options: Any) -> Router:
    """A Starlette `Router` serving the proxy's endpoints (`/run`, `/health`, ...) at its root.

    Policy options (`parameters=`, `authorize=`, `max_upload_bytes=`, ...) are
    those of `ikproxy.policy.Policy`; hooks receive the Starlette `Request`.
    """
    proxy = Proxy(deployment, policy, **options)
    return Router(routes=[Route("/{path:path}", ProxyEndpoint(proxy), name="proxy")])


def mount(
    path: str,
    deployment: Deployment,
    *,
    name: str = "ikproxy",
    policy: Policy | None = None,
    **options: Any,
) -> Mount:
    """The proxy's endpoints mounted at `path` (`Mount("/api", ...)` serves `/api/run`)."""
    return Mount(path, app=router(deployment, policy=policy, **options), name=name)


# -- FastAPI -----------------------------------------------------------------------

#: The wire error code for a refusal by a FastAPI dependency, by status.
_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal",
}
_DEPENDENCY_HOOKS = ("authorize", "rate_limit_key")


def fastapi_router(
    deployment: Deployment,
    *,
    prefix: str = "/ikproxy",
    dependencies: Sequence[Any] | None = None,
    tags: list[str] | None = None,
    policy: Policy | None = None,
    **options: Any,
) -> APIRouter:
    """A FastAPI `APIRouter` serving the proxy's endpoints under `prefix`.

    Policy options are those of `ikproxy.policy.Policy`; `authorize` and
    `rate_limit_key` may be plain hooks (given the `Request`) or `Depends(...)`.
    `/run` (GET and POST) and `/health` appear in the OpenAPI schema.
    """
    from fastapi import APIRouter
    from fastapi.params import Depends
    from fastapi.routing import APIRoute
    from starlette.responses import StreamingResponse

    resolved: dict[str, Any] = {}
    for hook in _DEPENDENCY_HOOKS:
        if isinstance(options.get(hook), Depends):
            resolved[hook] = options[hook]
            options[hook] = _ResolvedHook(hook)
    proxy = Proxy(deployment, policy, **options)

    class ProxyRoute(APIRoute):
        """Answers a refusal by a dependency with the proxy's JSON error body."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handler(request)
                except (HTTPException, HTTPError) as exc:
                    return _refusal(request, exc)

            return guarded

    api = APIRouter(
        prefix=prefix,
        dependencies=dependencies,
        tags=list(tags) if tags is not None else ["ikproxy"],
        route_class=ProxyRoute,
    )
    run = _fastapi_endpoint(proxy, "/run", resolved)
    query, body, responses = _run_docs(proxy.policy)
    api.add_api_route(
        "/run",
        run,
        methods=["GET"],
        name="ikproxy_run",
        summary="Start a run and stream its progress (parameters in the query)",
        response_class=StreamingResponse,
        responses=responses,
        openapi_extra={"parameters": query},
    )
    api.add_api_route(
        "/run",
        run,
        methods=["POST"],
        name="ikproxy_run",
        summary="Start a run and stream its progress (parameters and images in the body)",
        response_class=StreamingResponse,
        responses=responses,
        openapi_extra={"parameters": [FORMAT_PARAMETER], "requestBody": body},
    )
    api.add_api_route(
        "/health",
        _fastapi_endpoint(proxy, "/health", {}),
        methods=["GET"],
        name="ikproxy_health",
        summary="Health and protocol version",
        response_class=StreamingResponse,
        responses={200: {"description": "The proxy is up", "content": {"application/json": {}}}},
    )
    api.add_api_route(
        "/{path:path}",
        _fastapi_endpoint(proxy, None, {}),
        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        include_in_schema=False,
    )
    return api


class _ResolvedHook:
    """A core hook that answers with what a FastAPI dependency returned for this request."""

    def __init__(self, name: str) -> None:
        self.key = f"ikproxy.{name}"

    def __call__(self, request: Request) -> Any:
        return request.scope[self.key]


def _fastapi_endpoint(
    proxy: Proxy, path: str | None, dependencies: dict[str, Any]
) -> Callable[..., Awaitable[Response]]:
    """The endpoint for `path` (None: from the URL); it takes the dependencies' values first."""

    async def endpoint(request: Request, **values: Any) -> Response:
        for name, value in values.items():
            request.scope[f"ikproxy.{name}"] = value
        where = path if path is not None else "/" + request.path_params.get("path", "")
        answer = await proxy.handle(proxy_request(request, where), request.stream())
        return to_starlette_response(answer)

    parameters = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)]
    parameters += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=depends, annotation=Any)
        for name, depends in dependencies.items()
    ]
    endpoint.__signature__ = inspect.Signature(parameters, return_annotation=Response)  # type: ignore[attr-defined]
    return endpoint


def _refusal(request: Request, exc: HTTPException | HTTPError) -> Response:
    """A dependency's refusal as the proxy's JSON error, keeping its status and headers."""
    if isinstance(exc, HTTPException):
        phrase = _phrase(exc.status_code)
        code = _CODES.get(exc.status_code) or phrase.lower().replace(" ", "_").replace("-", "_")
        message = exc.detail if isinstance(exc.detail, str) and exc.detail else phrase
        exc = HTTPError(exc.status_code, code, message, headers=exc.headers)
    request_id = new_request_id(request.headers.get("x-request-id"))
    return to_starlette_response(error_response(exc, request_id))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# -- OpenAPI ------------------------------------------------------------------------


@functools.cache
def _error_model() -> type[Any]:
    """The error body as a pydantic model, so the schema is one shared component."""
    from pydantic import BaseModel

    class ProxyErrorDetail(BaseModel):
        code: str
        message: str
        request_id: str | None = None

    class ProxyError(BaseModel):
        error: ProxyErrorDetail

    return ProxyError


def _run_docs(
    policy: Policy,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[int | str, dict[str, Any]]]:
    """The OpenAPI query parameters, request body and responses of `/run`, from the policy."""
    query, body, responses = run_docs(policy)
    documented: dict[int | str, dict[str, Any]] = {200: responses[200]}
    for status, description in STATUS_DOCS.items():
        documented[status] = {"description": description, "model": _error_model()}
    return query, body, documented

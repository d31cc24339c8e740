"""The proxy as a Litestar router.

    from ikproxy.adapters.litestar import router

    app = Litestar(route_handlers=[router(deployment, path="/api", parameters={"prompt": str})])

One catch-all handler hands every request under `path` to the core, which
answers `/run`, `/health`, `/ikproxy.js` and the errors; hooks receive
Litestar's `Request`. Streams are a plain `Stream` of the core's bytes with
the exact media type and headers (Litestar's `ServerSentEvent` would encode
them again). The handler has no Litestar body limit of its own: the core
enforces `max_upload_bytes` while reading, so every 413 has the proxy's body.
`/run` (GET and POST) appears in the app's OpenAPI schema, its parameters
described from the policy (a parameters model by its own JSON schema).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from litestar import HttpMethod, Request, Response, Router, route
from litestar.background_tasks import BackgroundTask
from litestar.openapi.spec import Operation
from litestar.response import Stream

from ikproxy.deployments import Deployment
from ikproxy.policy.config import Policy
from ikproxy.proxy.core import Proxy, ProxyRequest, ProxyResponse
from ikproxy.proxy.openapi import FORMAT_PARAMETER, run_docs

__all__ = ["router"]

_METHODS = [
    HttpMethod.GET,
    HttpMethod.POST,
    HttpMethod.PUT,
    HttpMethod.PATCH,
    HttpMethod.DELETE,
    HttpMethod.OPTIONS,
]


def router(
    deployment: Deployment,
    *,
    path: str = "/ikproxy",
    policy: Policy | None = None,
    **options: Any,
) -> Router:
    """A router serving the proxy's endpoints under `path`.

    Policy options (`parameters=`, `authorize=`, `max_upload_bytes=`, ...) are
    those of `ikproxy.policy.Policy`; hooks receive Litestar's `Request`.
    """
    proxy = Proxy(deployment, policy, **options)

    async def answer(request: Request[Any, Any, Any], where: str | None) -> Response[Any]:
        reply = await proxy.handle(_proxy_request(request, where), request.stream())
        if request.method != "HEAD":
            return _to_response(reply)
        # Litestar refuses a body for HEAD: send the headers of the GET answer alone.
        headers = dict(reply.headers)
        if isinstance(reply.body, bytes):
            headers["Content-Length"] = str(len(reply.body))
        else:
            await _close(reply.body)
        return Response(b"", status_code=reply.status, headers=headers)

    def handler(
        paths: list[str], methods: Sequence[HttpMethod], where: str | None, **docs: Any
    ) -> Any:
        @route(
            paths,
            http_method=list(methods),
            name=f"ikproxy-{where or 'any'}-{'-'.join(map(str, methods))}:{path}",
            request_max_body_size=None,
            include_in_schema=bool(docs),
            status_code=200,
            **docs,
        )
        async def endpoint(request: Request[Any, Any, Any]) -> Response[Any]:
            return await answer(request, where)

        return endpoint

    query, body, responses = run_docs(proxy.policy)
    others: list[HttpMethod] = [m for m in _METHODS if m not in (HttpMethod.GET, HttpMethod.POST)]
    handlers = [
        # OPTIONS first: Litestar adds its own to a path that has none yet.
        handler(["/run"], others, "/run"),
        handler(["/run"], [HttpMethod.HEAD], "/run"),
        handler(
            ["/run"],
            [HttpMethod.GET],
            "/run",
            summary="Start a run and stream its progress (parameters in the query)",
            operation_id=_operation_id(path, "get"),
            operation_class=_documented(query, None, responses),
        ),
        handler(
            ["/run"],
            [HttpMethod.POST],
            "/run",
            summary="Start a run and stream its progress (parameters and images in the body)",
            operation_id=_operation_id(path, "post"),
            operation_class=_documented([FORMAT_PARAMETER], body, responses),
        ),
        handler(["/", "/{path:path}"], _METHODS, None),
        handler(["/", "/{path:path}"], [HttpMethod.HEAD], None),
    ]
    return Router(path=path, route_handlers=handlers)


def _operation_id(path: str, method: str) -> str:
    """`ikproxy_run_api_run_get` for `GET /api/run`, as FastAPI names it."""
    return "ikproxy_run" + re.sub(r"\W+", "_", path.rstrip("/") + "/run_") + method


def _documented(
    parameters: list[dict[str, Any]], body: dict[str, Any] | None, responses: dict[int, Any]
) -> type[Operation]:
    """An `Operation` whose parameters, body and responses are the proxy's own description."""

    @dataclass
    class RunOperation(Operation):
        def __post_init__(self) -> None:
            # Plain OpenAPI dicts: Litestar writes them into the schema as they are.
            self.parameters = parameters  # type: ignore[assignment]
            self.request_body = body  # type: ignore[assignment]
            self.responses = {str(status): doc for status, doc in responses.items()}

    return RunOperation


def _proxy_request(request: Request[Any, Any, Any], where: str | None = None) -> ProxyRequest:
    return ProxyRequest(
        method=request.method,
        path=where or str(request.path_params.get("path", "/")),
        query_string=request.scope["query_string"].decode("latin-1"),
        headers=request.headers,
        client=request.client.host if request.client else None,
        native=request,
    )


def _to_response(answer: ProxyResponse) -> Response[Any]:
    media_type = answer.headers.get("Content-Type")
    if isinstance(answer.body, bytes):
        return Response(
            answer.body, status_code=answer.status, headers=answer.headers, media_type=media_type
        )
    # The background task closes the run if the client left while a chunk was
    # being written (a disconnect mid-`send` leaves the stream suspended).
    return Stream(
        answer.body,
        status_code=answer.status,
        headers=answer.headers,
        media_type=media_type,
        background=BackgroundTask(_close, answer.body),
    )


async def _close(body: bytes | AsyncIterator[bytes]) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        await aclose()

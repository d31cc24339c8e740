"""The proxy as a Litestar router.

    from ikproxy.adapters.litestar import router

    app = Litestar(route_handlers=[router(deployment, path="/api", parameters={"prompt": str})])

One catch-all handler hands every request under `path` to the core, which
answers `/run`, `/health`, `/ikproxy.js` and the errors; hooks receive
Litestar's `Request`. Streams are a plain `Stream` of the core's bytes with
the exact media type and headers (Litestar's `ServerSentEvent` would encode
them again). The handler has no Litestar body limit of its own: the core
enforces `max_upload_bytes` while reading, so every 413 has the proxy's body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import HttpMethod, Request, Response, Router, route
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from ..deployments import Deployment
from ..policy import Policy
from ..proxy import Proxy, ProxyRequest, ProxyResponse

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

    async def _answer(request: Request[Any, Any, Any]) -> ProxyResponse:
        return await proxy.handle(_proxy_request(request), request.stream())

    @route(
        ["/", "/{path:path}"],
        http_method=_METHODS,
        name=f"ikproxy:{path}",
        include_in_schema=False,
        request_max_body_size=None,
    )
    async def endpoint(request: Request[Any, Any, Any]) -> Response[Any]:
        return _to_response(await _answer(request))

    @route(
        ["/", "/{path:path}"],
        http_method=HttpMethod.HEAD,
        name=f"ikproxy-head:{path}",
        include_in_schema=False,
        request_max_body_size=None,
    )
    async def head(request: Request[Any, Any, Any]) -> Response[bytes]:
        # Litestar refuses a body for HEAD: send the headers of the GET answer alone.
        answer = await _answer(request)
        headers = dict(answer.headers)
        if isinstance(answer.body, bytes):
            headers["Content-Length"] = str(len(answer.body))
        else:
            await _close(answer.body)
        return Response(b"", status_code=answer.status, headers=headers)

    return Router(path=path, route_handlers=[endpoint, head])


def _proxy_request(request: Request[Any, Any, Any]) -> ProxyRequest:
    return ProxyRequest(
        method=request.method,
        path=str(request.path_params.get("path", "/")),
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

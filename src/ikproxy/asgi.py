"""The mountable ASGI app: the proxy's endpoints as a Starlette application.

app = create_app(deployment, parameters={"prompt": Param(str, required=True)})
Mount("/api", app=app)       # GET/POST /api/run, /api/ikproxy.js, /api/health
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .deployments import Deployment
from .policy import Policy
from .proxy import Proxy, ProxyRequest, ProxyResponse
from .server import StreamingRunResponse

__all__ = ["ProxyEndpoint", "create_app", "proxy_request", "to_starlette_response"]


def proxy_request(request: Request, path: str) -> ProxyRequest:
    """Describe a Starlette request for the proxy core."""
    return ProxyRequest(
        method=request.method,
        path=path,
        query_string=request.url.query,
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw},
        client=request.client.host if request.client else None,
        native=request,
    )


def to_starlette_response(response: ProxyResponse) -> Response:
    """The core's answer as a Starlette response (streams stop on client disconnect)."""
    headers = response.headers_without_content_type()
    media_type = response.media_type
    if isinstance(response.body, bytes):
        return Response(response.body, response.status, headers, media_type)
    return StreamingRunResponse(response.body, response.status, headers, media_type)


class ProxyEndpoint:
    """A raw ASGI endpoint that hands every request under it to a `Proxy`."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        path = scope.get("path_params", {}).get("path", "")
        answer = await self.proxy.handle(proxy_request(request, path), request.stream())
        await to_starlette_response(answer)(scope, receive, send)


def create_app(
    deployment: Deployment,
    *,
    policy: Policy | None = None,
    debug: bool = False,
    **options: Any,
) -> Starlette:
    """A Starlette app serving `GET/POST /run`, `GET /ikproxy.js` and `GET /health`.

    Policy options (`parameters=`, `authorize=`, `max_upload_bytes=`, ...) are
    those of `ikproxy.policy.Policy`; hooks receive the Starlette `Request`.
    """
    proxy = Proxy(deployment, policy, **options)
    endpoint = ProxyEndpoint(proxy)
    app = Starlette(debug=debug, routes=[Route("/{path:path}", endpoint)])
    app.state.proxy = proxy
    return app

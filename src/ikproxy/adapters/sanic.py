"""The proxy as a Sanic blueprint.

    from ikproxy.adapters.sanic import blueprint

    app.blueprint(blueprint(deployment, url_prefix="/api", parameters={"prompt": str}))

One catch-all route hands every request under the prefix to the core, which
answers `/run`, `/health`, `/ikproxy.js` and the errors; hooks receive Sanic's
`Request` (so `request.ctx` is at hand). The route streams its request body,
so the core enforces `max_upload_bytes` while reading instead of Sanic
buffering the whole body first.

Sanic's `RESPONSE_TIMEOUT` (60 s by default) cuts a response that stays idle
that long between two writes, and the keepalive comments are what keep a
quiet run alive. So when the server starts, a keepalive interval longer than
half of `RESPONSE_TIMEOUT` is shortened to that half (with a warning).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from sanic import Blueprint, HTTPResponse, Request, Sanic

from ikproxy.deployments import Deployment
from ikproxy.policy.config import Policy
from ikproxy.proxy.core import METHODS, Proxy, ProxyRequest

__all__ = ["blueprint"]

logger = logging.getLogger("ikproxy")


def blueprint(
    deployment: Deployment,
    *,
    url_prefix: str = "/ikproxy",
    name: str = "ikproxy",
    policy: Policy | None = None,
    **options: Any,
) -> Blueprint:
    """A blueprint serving the proxy's endpoints under `url_prefix`.

    Policy options (`parameters=`, `authorize=`, `max_upload_bytes=`, ...) are
    those of `ikproxy.policy.Policy`; hooks receive Sanic's `Request`.
    """
    proxy = Proxy(deployment, policy, **options)
    bp = Blueprint(name, url_prefix=url_prefix)

    async def fit_keepalive(app: Sanic[Any, Any]) -> None:
        limit = float(app.config.RESPONSE_TIMEOUT)
        if proxy.policy.keepalive > limit / 2:
            logger.warning(
                "keepalive of %g s shortened to %g s: Sanic's RESPONSE_TIMEOUT is %g s",
                proxy.policy.keepalive,
                limit / 2,
                limit,
            )
            proxy.policy.keepalive = limit / 2

    async def endpoint(request: Request, path: str = "") -> HTTPResponse | None:
        answer = await proxy.handle(_proxy_request(request, path), _body(request))
        headers = answer.headers_without_content_type()
        content_type = answer.media_type
        if isinstance(answer.body, bytes):
            return HTTPResponse(
                answer.body, status=answer.status, headers=headers, content_type=content_type
            )
        stream = answer.body
        try:
            response = await request.respond(
                status=answer.status, headers=headers, content_type=content_type
            )
            async for chunk in stream:
                await response.send(chunk)
            await response.eof()
        finally:
            # A disconnect cancels this handler, maybe in `send`: close the run here.
            await _close(stream)
        return None

    bp.before_server_start(fit_keepalive)
    bp.add_route(endpoint, "/", methods=list(METHODS), name="proxy_root", stream=True)
    bp.add_route(endpoint, "/<path:path>", methods=list(METHODS), name="proxy", stream=True)
    return bp


def _proxy_request(request: Request, path: str) -> ProxyRequest:
    return ProxyRequest(
        method=request.method,
        path="/" + path,
        query_string=request.query_string,
        headers=request.headers,
        client=request.ip or None,
        native=request,
    )


async def _close(stream: AsyncIterator[bytes]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The request body chunk by chunk, as Sanic receives it."""
    # `request.stream` is the connection (HTTP/1.1 or HTTP/3); both have `read`.
    stream: Any = request.stream
    if stream is None:
        return
    while (chunk := await stream.read()) is not None:
        yield chunk

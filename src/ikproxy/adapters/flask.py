"""The proxy as a Flask blueprint.

    from ikproxy.adapters.flask import blueprint

    app.register_blueprint(blueprint(deployment, url_prefix="/api", parameters={"prompt": str}))

One catch-all route hands every request under the prefix to the core, which
answers `/run`, `/health`, `/ikproxy.js` and the errors. The core is called in
the view itself, so `authorize` and `rate_limit_key` run inside the request
context: they receive Flask's request, and `flask.request`, `flask.g` and
Flask-Login's `current_user` all work in them (an `async def` hook runs on the
event loop thread instead: use the request it is given). The run itself goes
on in the process-wide event loop thread (`ikproxy.server.blocking_portal`);
the response is a plain sync iterator, so `stream_with_context` is not needed.
If Flask's own `MAX_CONTENT_LENGTH` is set, Flask refuses larger bodies first.

Deploy with a threaded server (`flask run`, or gunicorn `-k gthread` with more
threads than open streams): each stream holds one thread while it lasts. A WSGI
server notices a client that left only when a write fails, so the run stops
within about two `keepalive` intervals.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import IO, Any, cast

from flask import Blueprint, Request, Response, request

from ikproxy.deployments import Deployment
from ikproxy.policy.config import Policy
from ikproxy.proxy.core import METHODS, Proxy, ProxyRequest, SyncProxyResponse

__all__ = ["ProxyBlueprint", "blueprint"]

_CHUNK = 64 * 1024


class ProxyBlueprint(Blueprint):
    """A blueprint whose routes are served by `proxy`."""

    proxy: Proxy


def blueprint(
    deployment: Deployment,
    *,
    url_prefix: str = "/ikproxy",
    name: str = "ikproxy",
    policy: Policy | None = None,
    **options: Any,
) -> ProxyBlueprint:
    """A blueprint serving the proxy's endpoints under `url_prefix`.

    Policy options (`parameters=`, `authorize=`, `max_upload_bytes=`, ...) are
    those of `ikproxy.policy.Policy`; hooks receive Flask's request. Every
    method reaches the core, so `OPTIONS` gets the same 405 as on the ASGI app.
    """
    proxy = Proxy(deployment, policy, **options)
    bp = ProxyBlueprint(name, __name__, url_prefix=url_prefix)
    bp.proxy = proxy

    def endpoint(path: str) -> Response:
        native = cast(Any, request)._get_current_object()
        answer = proxy.handle_sync(_proxy_request(native, path), _body(native.stream))
        return _to_response(answer)

    bp.add_url_rule("/", "proxy_root", endpoint, methods=list(METHODS), defaults={"path": ""})
    bp.add_url_rule("/<path:path>", "proxy", endpoint, methods=list(METHODS))
    return bp


def _proxy_request(native: Request, path: str) -> ProxyRequest:
    return ProxyRequest(
        method=native.method,
        path="/" + path,
        query_string=native.query_string,
        headers=native.headers,
        client=native.remote_addr,
        native=native,
    )


def _body(stream: IO[bytes]) -> Iterator[bytes]:
    """The request body in chunks, read only as far as the core asks."""
    return iter(partial(stream.read, _CHUNK), b"")


def _to_response(answer: SyncProxyResponse) -> Response:
    headers = answer.headers_without_content_type()
    content_type = answer.media_type
    # direct_passthrough: the iterator goes to the server as is, chunk by chunk,
    # and the server's close() reaches it (closing the run).
    return Response(
        answer.body,
        status=answer.status,
        headers=headers,
        content_type=content_type,
        direct_passthrough=answer.streaming,
    )

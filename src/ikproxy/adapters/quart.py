"""The proxy as a Quart blueprint.

    from ikproxy.adapters.quart import blueprint

    app.register_blueprint(blueprint(deployment, url_prefix="/api", parameters={"prompt": str}))

One catch-all route hands every request under the prefix to the core, which
answers `/run`, `/health`, `/ikproxy.js` and the errors. The core is awaited in
the view itself, so `authorize` and `rate_limit_key` run inside the request
context and receive Quart's `request`. Streams have no response timeout:
Quart's `RESPONSE_TIMEOUT` is a limit on the whole response, and a run may
last longer; the run's own deadline is the policy's `timeout`. A body larger
than Quart's `MAX_CONTENT_LENGTH` (16 MiB by default) is refused by Quart
itself, so raise it along with `max_upload_bytes`.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Request, Response, request

from ikproxy.deployments import Deployment
from ikproxy.policy.config import Policy
from ikproxy.proxy.core import METHODS, Proxy, ProxyRequest, ProxyResponse

__all__ = ["blueprint"]


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
    those of `ikproxy.policy.Policy`; hooks receive Quart's request.
    """
    proxy = Proxy(deployment, policy, **options)
    bp = Blueprint(name, __name__, url_prefix=url_prefix)

    async def endpoint(path: str) -> Response:
        native: Request = request._get_current_object()  # type: ignore[attr-defined]
        answer = await proxy.handle(_proxy_request(native, path), native.body)
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


def _to_response(answer: ProxyResponse) -> Response:
    headers = answer.headers_without_content_type()
    content_type = answer.media_type
    response = Response(
        answer.body, status=answer.status, headers=headers, content_type=content_type
    )
    if answer.streaming:
        response.timeout = None  # RESPONSE_TIMEOUT would cut the stream at 60 s in total
    return response

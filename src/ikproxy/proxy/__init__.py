"""The server side, framework-neutral: from a request description to a response.

`core` holds `Proxy`, which applies the policy and answers every endpoint, with
`access` running its access hooks and rate limit;
`request` describes a request and reads its body; `parsing` turns a run
request into inputs and parameters, with `multipart` reading forms as they
arrive; `stream` encodes a run as SSE or NDJSON; `uploads`, `images` and
`outputs` handle the files that go in and come out; `openapi` documents it.
The surfaces (`ikproxy.asgi`, `ikproxy.wsgi`, `ikproxy.adapters`) translate
their framework's request and response to and from these.
"""

from __future__ import annotations

from ikproxy.proxy.core import (
    METHODS,
    Proxy,
    ProxyRequest,
    ProxyResponse,
    SyncProxyResponse,
    error_response,
)

__all__ = [
    "METHODS",
    "Proxy",
    "ProxyRequest",
    "ProxyResponse",
    "SyncProxyResponse",
    "error_response",
]

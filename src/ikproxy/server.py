"""Server-side serialization, as the JavaScript package's `proxy/server` entry point.

`to_readable_stream` encodes a run's progress as an SSE or NDJSON byte stream,
framework-neutral (`ikproxy.proxy.stream`); `to_streaming_response` wraps it in
a Starlette response that stops the run when its client leaves (`ikproxy.asgi`);
`iterate_in_portal` bridges an async iterator to sync code (`ikproxy.concurrency`).
"""

from __future__ import annotations

from ikproxy.asgi import StreamingRunResponse, to_streaming_response
from ikproxy.concurrency import aclose, deadline, iterate_in_portal
from ikproxy.errors import error_code
from ikproxy.protocol import new_request_id
from ikproxy.proxy.stream import RunStream, StreamFormat, stream_headers, to_readable_stream

__all__ = [
    "RunStream",
    "StreamFormat",
    "StreamingRunResponse",
    "aclose",
    "deadline",
    "error_code",
    "iterate_in_portal",
    "new_request_id",
    "stream_headers",
    "to_readable_stream",
    "to_streaming_response",
]

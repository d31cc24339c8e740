"""The ikproxy wire protocol (version 1), shared by the server and the consumers.

A stream is a sequence of `progress` events ending in exactly one terminal
event, `result` or `error`. Over SSE the event name is the type and the data
is a JSON object; over NDJSON each line is that object with a `type` (and the
`id`) added. docs/protocol.md is the full description.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Final

from ikproxy.decimals import parse_decimal

__all__ = [
    "ERROR",
    "KEEPALIVE",
    "NDJSON_MEDIA_TYPE",
    "PROGRESS",
    "PROTOCOL_VERSION",
    "RESULT",
    "SSE_MEDIA_TYPE",
    "error_body",
    "new_request_id",
    "parse_position",
]

PROTOCOL_VERSION: Final = 1

PROGRESS: Final = "progress"
RESULT: Final = "result"
ERROR: Final = "error"
KEEPALIVE: Final = "keepalive"

SSE_MEDIA_TYPE: Final = "text/event-stream"
NDJSON_MEDIA_TYPE: Final = "application/x-ndjson"

_REQUEST_ID = re.compile(r"[A-Za-z0-9._\-]{1,64}")


def error_body(code: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """The JSON body of an HTTP error response: `{"error": {"code", "message", ...}}`."""
    error: dict[str, Any] = {"code": code, "message": message}
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


def new_request_id(given: str | None = None) -> str:
    """The request id for logs and error events: the caller's if it is safe, else a new one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def parse_position(last_event_id: str) -> tuple[str, int] | None:
    """(token, number of events seen) from a `Last-Event-ID` of the form `<token>:<n>`."""
    token, sep, number = last_event_id.rpartition(":")
    seen = parse_decimal(number)
    if not sep or not token or seen is None:
        return None
    return token, seen

"""What the fake keeps of each request, and the ASGI plumbing to read a body twice.

The fake reads every request body up front (to record it) and then replays it
to its routes, so recording never depends on what a route chooses to read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl

from starlette.types import Message, Receive, Scope

__all__ = [
    "JWT_PATH",
    "KINDS",
    "POLL_PREFIX",
    "RUN_PATH",
    "STORAGE_PREFIXES",
    "WORKFLOW_PATH",
    "Kind",
    "RecordedRequest",
    "check_kind",
    "read_body",
    "record",
    "replay",
]

Kind = Literal["jwt", "workflow", "run", "poll", "storage", "other"]
"""The kinds of request the fake tells apart, by path alone ("storage": any request to
its SCALE storage; "other": any unknown path)."""

KINDS: tuple[Kind, ...] = get_args(Kind)

JWT_PATH = "/v1/projects/jwt/"
WORKFLOW_PATH = "/workflow"
RUN_PATH = "/api/run"
POLL_PREFIX = "/api/results/"
STORAGE_PREFIXES = (
    "/v1/objects/",
    "/v1/presigned-urls/",
    "/v1/presigned/",
    "/v1/downloads/",
    "/v1/infos",
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    kind: Kind
    method: str
    path: str
    #: Query parameters; a repeated one keeps its last value.
    query: dict[str, str]
    #: Header names are lowercased; repeated headers are joined with ", ".
    headers: dict[str, str]
    #: The parsed JSON body, or None (no body, or not JSON).
    json: Any
    #: `time.monotonic()` at arrival.
    time: float
    #: The raw body; empty for storage requests, whose uploads are streamed to disk.
    body: bytes = field(default=b"", repr=False)


def check_kind(kind: str) -> None:
    """`ValueError` unless `kind` is one of `KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"unknown request kind {kind!r}: expected one of {', '.join(KINDS)}")


def classify(path: str) -> Kind:
    """The kind of a request, from its path."""
    if path == JWT_PATH:
        return "jwt"
    if path == WORKFLOW_PATH:
        return "workflow"
    if path == RUN_PATH:
        return "run"
    if path.startswith(STORAGE_PREFIXES):
        return "storage"
    run_uuid = path.removeprefix(POLL_PREFIX)
    if run_uuid != path and run_uuid and "/" not in run_uuid:
        return "poll"
    return "other"


def record(scope: Scope, body: bytes) -> RecordedRequest:
    """The record of an HTTP request whose whole body is `body`."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return RecordedRequest(
        kind=classify(scope["path"]),
        method=scope["method"],
        path=scope["path"],
        query=dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)),
        headers=headers,
        json=parsed,
        time=time.monotonic(),
        body=body,
    )


async def read_body(receive: Receive) -> bytes:
    """The whole request body (what arrived of it, if the client left)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the already-read body once, then defers to the server's."""
    pending = True

    async def receive_again() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again

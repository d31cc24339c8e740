"""Turn a run's progress stream into an SSE or NDJSON byte stream (wire protocol v1).

`to_readable_stream` encodes each progress as it comes, sends keepalives while
the upstream is silent, ends with exactly one terminal event, and masks errors.
It is framework-neutral: `ikproxy.asgi.to_streaming_response` wraps it in a
Starlette response, and the adapters in their framework's.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Mapping,
)
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union

import anyio

from ikproxy.codecs.ndjson import encode_line
from ikproxy.codecs.sse import encode_comment, encode_retry
from ikproxy.concurrency import aclose, deadline
from ikproxy.errors import UpstreamError, WorkflowFailed, public_error
from ikproxy.model import Progress, State, StreamItem
from ikproxy.policy.config import Policy
from ikproxy.protocol import (
    ERROR,
    NDJSON_MEDIA_TYPE,
    PROGRESS,
    PROTOCOL_VERSION,
    RESULT,
    SSE_MEDIA_TYPE,
    new_request_id,
)
from ikproxy.telemetry import RunObserver

__all__ = [
    "IdPrefix",
    "RunStream",
    "StreamFormat",
    "StreamItem",
    "StreamOptions",
    "stream_headers",
    "to_readable_stream",
]

logger = logging.getLogger("ikproxy")

T = TypeVar("T")
StreamFormat = Literal["sse", "ndjson"]
IdPrefix = Union[str, Callable[[], str]]

#: How many encoded events are joined into one write when they are ready together.
_COALESCE_BYTES = 64 * 1024
_QUEUE_SIZE = 64


@dataclass(frozen=True)
class StreamOptions:
    """How a run is sent: its wire format, keepalive interval (seconds), the `retry:`
    delay it asks of an `EventSource` (ms, None: none), its request id (None: a new
    one), its deadline (seconds, None: none), whether the run outlives its client, and
    who observes it (its telemetry and run-end hook, `ikproxy.telemetry`)."""

    format: StreamFormat = "sse"
    keepalive: float = 15.0
    retry_ms: int | None = 3000
    request_id: str | None = None
    timeout: float | None = None
    finish_on_disconnect: bool = False
    observer: RunObserver | None = None

    @classmethod
    def from_policy(
        cls,
        policy: Policy,
        format: StreamFormat,
        request_id: str,
        observer: RunObserver | None = None,
    ) -> StreamOptions:
        """The options `policy` sets (read when called: an adapter may tune it after start)."""
        return cls(
            observer=observer,
            format=format,
            keepalive=policy.keepalive,
            retry_ms=policy.retry_ms,
            request_id=request_id,
            timeout=policy.timeout,
            finish_on_disconnect=policy.finish_on_disconnect,
        )


def stream_headers(format: StreamFormat, request_id: str | None = None) -> dict[str, str]:
    """The response headers of a stream. Never `Connection`: servers own that header."""
    headers = {
        "Content-Type": (
            f"{SSE_MEDIA_TYPE}; charset=utf-8" if format == "sse" else NDJSON_MEDIA_TYPE
        ),
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "Ikproxy-Protocol": str(PROTOCOL_VERSION),
    }
    if request_id:
        headers["X-Request-ID"] = request_id
    return headers


class _Encoder:
    """Frames wire objects as SSE events or NDJSON lines, numbering them from `first_id`.

    With an `id_prefix` (a resumable run's token and a colon) every id is the
    text `<prefix><n>`, in NDJSON too; otherwise NDJSON ids are integers. A
    callable prefix is called for each event (a sealed reference with its expiry).
    """

    def __init__(self, format: StreamFormat, first_id: int = 1, id_prefix: IdPrefix = "") -> None:
        if format not in ("sse", "ndjson"):
            raise ValueError(f"format must be 'sse' or 'ndjson', not {format!r}")
        self.sse = format == "sse"
        self.next_id = first_id
        self.id_prefix = id_prefix

    def preamble(self, retry_ms: int | None) -> bytes:
        if not self.sse:
            return b""
        head = encode_comment(f"ikproxy protocol {PROTOCOL_VERSION}")
        return head + (encode_retry(retry_ms) if retry_ms is not None else b"\n")

    def keepalive(self) -> bytes:
        # A blank line after the comment makes proxies that flush per event flush it.
        return encode_comment("keepalive") + b"\n" if self.sse else b'{"type":"keepalive"}\n'

    def event(self, kind: str, obj: Mapping[str, Any]) -> bytes:
        number = self.next_id
        self.next_id += 1
        prefix = self.id_prefix if isinstance(self.id_prefix, str) else self.id_prefix()
        event_id: int | str = f"{prefix}{number}" if prefix else number
        if self.sse:
            # Compact JSON never holds a raw CR or LF, so the data is one line; the
            # id is our own text, never CR, LF or NUL.
            payload = encode_line(obj)
            return b"".join(
                (
                    b"event: %s\nid: %s\ndata: " % (kind.encode(), str(event_id).encode()),
                    memoryview(payload)[:-1],
                    b"\n\n",
                )
            )
        line: bytes = encode_line({"type": kind, "id": event_id, **obj})
        return line


def _as_wire(item: StreamItem) -> tuple[str, dict[str, Any]]:
    """(event type, wire object) for one upstream item."""
    obj = item.to_json() if isinstance(item, Progress) else dict(item)
    if obj.get("results") is not None:
        return RESULT, obj
    return PROGRESS, obj


class _End:
    """Queue marker: the producer is done (the terminal event was queued before it)."""


_END = _End()

Write = Callable[[bytes], Awaitable[None]]


class RunStream:
    """A run encoded as wire protocol bytes: an async iterator of byte chunks.

    Progress items become `progress` events; the first one with `results`
    becomes the terminal `result` event. An exception (or a stream that ends
    without results) becomes one terminal `error` event with a safe message;
    the detail is logged under the request id. While the upstream is silent a
    keepalive is sent every `options.keepalive` seconds. Closing it closes the
    upstream at once, unless `options.finish_on_disconnect` lets the run finish.

    Iterating it runs the upstream in a producer task, so keepalives never
    cancel an upstream call. `send_to(write)` is the ASGI fast path: the
    upstream is read and written in the caller's task, with a timer for
    keepalives, which costs a task switch less per event.
    """

    def __init__(
        self,
        stream: AsyncIterable[StreamItem],
        options: StreamOptions = StreamOptions(),
        *,
        first_id: int = 1,
        id_prefix: IdPrefix = "",
    ) -> None:
        self._stream = stream
        self._encoder = _Encoder(options.format, first_id, id_prefix)
        self.options = options
        self.request_id = options.request_id or new_request_id()
        self._iterator: AsyncGenerator[bytes, None] | None = None
        self._started = False
        #: What the run's observer is told at its end: its outcome, events and bytes sent.
        self._observer = options.observer
        self._outcome = "disconnected"
        self._events = 0
        self._sent = 0

    # -- encoding, shared by both paths ------------------------------------------

    def _encode(self, item: StreamItem) -> tuple[bytes, bool]:
        """(the event's bytes, whether it is terminal) for one upstream item."""
        kind, obj = _as_wire(item)
        if obj.get("state") == State.FAILURE:
            raise WorkflowFailed("the upstream reported a FAILURE state")
        self._events += 1
        if self._events == 1 and self._observer is not None:
            self._observer.first_event(obj)
        return self._encoder.event(kind, obj), kind == RESULT

    def _encode_error(self, exc: BaseException) -> bytes:
        _, code, message = public_error(exc)
        if not getattr(exc, "logged", False):
            logger.error("run failed [request_id=%s code=%s]", self.request_id, code, exc_info=exc)
        body = {"code": code, "message": message, "request_id": self.request_id}
        self._events += 1
        self._outcome = code
        return self._encoder.event(ERROR, body)

    def _ended(self, outcome: str) -> None:
        """Tell the observer, once, how the stream ended."""
        if self._observer is not None:
            self._observer.end(outcome, self._events, self._sent)

    # -- the iterator path ----------------------------------------------------------

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> bytes:
        if self._iterator is None:
            self._claim()
            self._iterator = self._pump()
        return await self._iterator.__anext__()

    async def aclose(self) -> None:
        """Stop: close the upstream (or let it finish, with `finish_on_disconnect`)."""
        if self._iterator is not None:
            await self._iterator.aclose()
        elif not self._started:
            self._started = True
            self._ended("disconnected")  # never sent: its client left before it started
            await aclose(self._stream)

    def _claim(self) -> None:
        if self._started:
            raise RuntimeError("a RunStream can be consumed only once")
        self._started = True

    async def _pump(self) -> AsyncGenerator[bytes, None]:
        queue: asyncio.Queue[bytes | _End] = asyncio.Queue(_QUEUE_SIZE)
        detached = False

        async def put(chunk: bytes | _End) -> None:
            if not detached:
                await queue.put(chunk)

        async def produce() -> None:
            upstream = aiter(self._stream)
            try:
                with deadline(self.options.timeout):
                    async for item in upstream:
                        chunk, done = self._encode(item)
                        if done:
                            self._outcome = "result"
                        await put(chunk)
                        if done:
                            break
                    else:
                        raise UpstreamError("the run ended without results")
            except Exception as exc:
                await put(self._encode_error(exc))
            finally:
                with anyio.CancelScope(shield=True):
                    await aclose(upstream)
            # Not reached when cancelled: nobody is reading then.
            await put(_END)

        observer = self._observer
        # The producer runs in the run's trace (its context is copied when it is made).
        token = observer.streaming() if observer is not None else None
        producer = asyncio.get_running_loop().create_task(produce())
        if observer is not None:
            observer.detach(token)
        finished = False
        try:
            preamble = self._encoder.preamble(self.options.retry_ms)
            if preamble:
                self._sent += len(preamble)
                yield preamble
            while True:
                if queue.empty():
                    chunk: bytes | _End | None = None
                    with anyio.move_on_after(self.options.keepalive):
                        chunk = await queue.get()
                    if chunk is None:
                        keepalive = self._encoder.keepalive()
                        self._sent += len(keepalive)
                        yield keepalive
                        continue
                else:
                    chunk = queue.get_nowait()
                if isinstance(chunk, _End):
                    finished = True
                    return
                # Events that are ready together go out in one write.
                parts, size, ended = [chunk], len(chunk), False
                while size < _COALESCE_BYTES and not queue.empty():
                    more = queue.get_nowait()
                    if isinstance(more, _End):
                        ended = True
                        break
                    parts.append(more)
                    size += len(more)
                out = parts[0] if len(parts) == 1 else b"".join(parts)
                self._sent += len(out)
                yield out
                if ended:
                    finished = True
                    return
        finally:
            self._ended(self._outcome if finished else "disconnected")
            if not producer.done():
                if self.options.finish_on_disconnect:
                    detached = True
                    while not queue.empty():
                        queue.get_nowait()
                    _background.add(producer)
                    producer.add_done_callback(_background.discard)
                else:
                    producer.cancel()
                    with anyio.CancelScope(shield=True):
                        await asyncio.wait({producer})

    # -- the ASGI fast path -------------------------------------------------------

    async def send_to(self, write: Write) -> None:
        """Write the whole stream with `write`, reading the upstream in this task.

        Cancelling the caller (a client disconnect) cancels the upstream call
        in flight and closes it. With `finish_on_disconnect` the run must
        outlive this task, so the producer path is used instead.
        """
        if self.options.finish_on_disconnect:
            try:
                async for chunk in self:
                    await write(chunk)
            finally:
                with anyio.CancelScope(shield=True):
                    await self.aclose()
            return
        self._claim()
        observer = self._observer
        token = observer.streaming() if observer is not None else None
        finished = False
        writer = _KeepaliveWriter(
            write,
            self.options.keepalive,
            self._encoder.keepalive(),
            prefix=self._encoder.preamble(self.options.retry_ms),
        )
        upstream = aiter(self._stream)
        try:
            try:
                with deadline(self.options.timeout):
                    while True:
                        try:
                            item = await upstream.__anext__()
                        except StopAsyncIteration:
                            raise UpstreamError("the run ended without results") from None
                        chunk, done = self._encode(item)
                        await writer.write(chunk)
                        if done:
                            self._outcome, finished = "result", True
                            return
            except Exception as exc:
                if writer.broken:
                    raise
                await writer.write(self._encode_error(exc))
                finished = True
        finally:
            writer.close()
            self._sent = writer.sent
            if observer is not None:
                observer.detach(token)
            self._ended(self._outcome if finished else _stopped())
            with anyio.CancelScope(shield=True):
                await aclose(upstream)


class _KeepaliveWriter:
    """Writes chunks in order, and a keepalive whenever nothing was written for a while.

    One timer per stream, re-armed from the time of the last write: a busy
    stream pays a clock read per event, not a timer. A `prefix` (the stream's
    preamble) goes out with the first chunk, in one write, or on its own
    after `prefix_delay` if the first chunk is slow to come.
    """

    def __init__(
        self,
        write: Write,
        interval: float,
        payload: bytes,
        prefix: bytes = b"",
        prefix_delay: float = 0.05,
    ) -> None:
        self._write = write
        self._interval = interval
        self._payload = payload
        self._prefix = prefix
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._pending: asyncio.Task[None] | None = None
        first = min(prefix_delay, interval) if prefix else interval
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(first, self._tick)
        self.broken = False
        #: Bytes written so far.
        self.sent = 0

    def _tick(self) -> None:
        idle = self._loop.time() - self._last
        if self._pending is None and (self._prefix or idle >= self._interval * 0.999):
            payload, self._prefix = self._prefix or self._payload, b""
            self._pending = self._loop.create_task(self._send_alone(payload))
            idle = 0.0
        self._timer = self._loop.call_later(max(self._interval - idle, 0.001), self._tick)

    async def _send_alone(self, payload: bytes) -> None:
        try:
            await self._write(payload)
            self.sent += len(payload)
            self._last = self._loop.time()
        except Exception:
            self.broken = True  # the next write raises too; the disconnect ends the run
        finally:
            self._pending = None

    async def write(self, chunk: bytes) -> None:
        if self._pending is not None:
            await self._pending
        if self._prefix:
            chunk, self._prefix = self._prefix + chunk, b""
        try:
            await self._write(chunk)
        except BaseException:
            self.broken = True
            raise
        self.sent += len(chunk)
        self._last = self._loop.time()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending is not None:
            self._pending.cancel()


def to_readable_stream(
    stream: AsyncIterable[StreamItem],
    *,
    format: StreamFormat = "sse",
    keepalive: float = 15.0,
    retry_ms: int | None = 3000,
    request_id: str | None = None,
    timeout: float | None = None,
    finish_on_disconnect: bool = False,
) -> RunStream:
    """Encode a stream of `Progress` (or dicts of the same form) as wire protocol bytes.

    The result is an async iterator of byte chunks (a `RunStream`): `progress`
    events, then one terminal `result` or `error` event, with keepalives while
    the upstream is silent. Closing it closes the upstream at once, unless
    `finish_on_disconnect` lets the run finish.
    """
    options = StreamOptions(
        format=format,
        keepalive=keepalive,
        retry_ms=retry_ms,
        request_id=request_id,
        timeout=timeout,
        finish_on_disconnect=finish_on_disconnect,
    )
    return RunStream(stream, options)


def _stopped() -> str:
    """How a stream that ended without its terminal event ended: its client left, or
    (Python 3.11+: the upstream was cancelled while nobody cancelled this task) the run
    was cancelled on the server's side."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    if cancelling is not None and not cancelling() and sys.exc_info()[0] is asyncio.CancelledError:
        return "cancelled"
    return "disconnected"


#: Producers of runs whose client left while `finish_on_disconnect` holds.
_background: set[asyncio.Task[None]] = set()

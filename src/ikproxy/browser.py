"""Read an ikproxy stream back into `Results`, from Python (the browser module's twin).

    async with httpx.AsyncClient() as http:
        async with http.stream("GET", url, params={"prompt": "a cat"}) as response:
            results = await process_streaming_response(response, on_progress=print)

Each `progress` (and the final `result`) is passed to `on_progress`; an
`error` event raises `StreamError`; a stream that ends without a terminal
event raises `IncompleteStream`. Every function has a `_sync` twin.
"""

from __future__ import annotations

import email.utils
import inspect
import json
import math
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Union

import anyio

from ikproxy.codecs.ndjson import NDJSONDecoder, NDJSONError
from ikproxy.codecs.sse import SSEDecoder, SSEError
from ikproxy.decimals import parse_decimal
from ikproxy.errors import IkproxyError, IncompleteStream, StreamError
from ikproxy.io import RefIO
from ikproxy.model import Progress, Results
from ikproxy.protocol import (
    ERROR,
    KEEPALIVE,
    NDJSON_MEDIA_TYPE,
    PROGRESS,
    RESULT,
    SSE_MEDIA_TYPE,
    parse_position,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "OnProgress",
    "process_json_stream",
    "process_json_stream_sync",
    "process_readable_stream",
    "process_readable_stream_sync",
    "process_streaming_response",
    "process_streaming_response_sync",
    "run",
    "run_sync",
]

_INCOMPLETE = "the stream ended without a result or error event"

OnProgress = Callable[[Progress], Union[Awaitable[None], None]]
Format = Literal["sse", "ndjson"]


class _Reader:
    """Sans-I/O: wire bytes (or NDJSON objects) in, progress and a final outcome out.

    Every method returns the progress decoded so far; a terminal event, a
    malformed stream or a cut one is recorded (not raised) so that the caller
    can first pass on the progress that arrived with it, then call `outcome()`.
    """

    def __init__(self, format: Format | None = None) -> None:
        self.format = format
        self._sse = SSEDecoder()
        self._ndjson = NDJSONDecoder()
        self.results: Results | None = None
        self.error: IkproxyError | None = None
        #: The id of the last progress or result event: where a resumable run resumes.
        self.last_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.results is not None or self.error is not None

    def feed(self, chunk: bytes) -> list[Progress]:
        if self.finished:
            return []
        if self.format is None:
            stripped = chunk.lstrip()
            if not stripped:
                return []
            self.format = "ndjson" if stripped[:1] in (b"{", b"[") else "sse"
        return self._decode(chunk, final=False)

    def close(self) -> list[Progress]:
        if self.finished or self.format is None:
            return []
        return self._decode(b"", final=True)

    def _decode(self, chunk: bytes, final: bool) -> list[Progress]:
        out: list[Progress] = []
        problem: Exception | None = None
        if self.format == "sse":
            try:
                events = self._sse.close() if final else self._sse.feed(chunk)
            except SSEError as exc:
                events, problem = exc.events, exc
            for event in events:
                items = self.message(event.event, event.data)
                if items and event.id:
                    self.last_id = event.id
                out.extend(items)
        else:
            try:
                values = self._ndjson.close() if final else self._ndjson.feed(chunk)
            except NDJSONError as exc:
                values, problem = exc.values, exc
            for value in values:
                out.extend(self.object(value))
        if problem is not None and not self.finished:
            if final:  # a last line cut in the middle: the connection dropped
                self.error = IncompleteStream(_INCOMPLETE)
            else:
                self.error = StreamError("invalid_stream", f"malformed stream: {problem}")
        return out

    def object(self, value: Any) -> list[Progress]:
        """One NDJSON wire object (with its `type`)."""
        if self.finished:
            return []
        if not isinstance(value, Mapping):
            return self._malformed("a line is not a JSON object")
        items = self._handle(value.get("type"), value)
        if items and isinstance(value.get("id"), (str, int)):
            self.last_id = str(value["id"])
        return items

    def message(self, kind: str | None, data: str) -> list[Progress]:
        """One SSE event; the data of event types we do not know is never parsed."""
        if self.finished or kind not in (PROGRESS, RESULT, ERROR):
            return []
        try:
            value = json.loads(data)
        except json.JSONDecodeError:
            return self._malformed("event data is not JSON")
        return self._handle(kind, value)

    def _handle(self, kind: Any, data: Any) -> list[Progress]:
        if self.finished or kind == KEEPALIVE:
            return []
        if kind == ERROR:
            if not isinstance(data, Mapping):
                return self._malformed("error event is not an object")
            request_id = data.get("request_id")
            self.error = StreamError(
                str(data.get("code") or "internal"),
                str(data.get("message") or "The run failed."),
                request_id if isinstance(request_id, str) else None,
            )
            return []
        if kind not in (PROGRESS, RESULT):
            return []  # unknown event types are for later protocol versions
        try:
            progress = Progress.from_json(data)
        except ValueError as exc:
            return self._malformed(str(exc))
        if kind == RESULT:
            if progress.results is None:
                return self._malformed("result event without results")
            self.results = progress.results
        return [progress]

    def _malformed(self, why: str) -> list[Progress]:
        self.error = StreamError("invalid_stream", f"malformed stream: {why}")
        return []

    def outcome(self) -> Results:
        """The results, or the recorded error raised; `IncompleteStream` if neither."""
        if self.error is not None:
            raise self.error
        if self.results is None:
            raise IncompleteStream(_INCOMPLETE)
        return self.results


async def _notify(on_progress: OnProgress | None, items: list[Progress]) -> None:
    if on_progress is None:
        return
    for item in items:
        outcome = on_progress(item)
        if inspect.isawaitable(outcome):
            await outcome


def _notify_sync(on_progress: OnProgress | None, items: list[Progress]) -> None:
    if on_progress is None:
        return
    for item in items:
        outcome = on_progress(item)
        if inspect.isawaitable(outcome):
            raise TypeError("the sync consumers need a sync on_progress callback")


async def process_readable_stream(
    chunks: AsyncIterable[bytes] | Iterable[bytes],
    on_progress: OnProgress | None = None,
    *,
    format: Format | None = None,
) -> Results:
    """Consume wire bytes (SSE, or NDJSON when the first byte is `{`) into `Results`."""
    reader = _Reader(format)
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            await _notify(on_progress, reader.feed(chunk))
            if reader.finished:
                return reader.outcome()
    else:
        for chunk in chunks:
            await _notify(on_progress, reader.feed(chunk))
            if reader.finished:
                return reader.outcome()
    await _notify(on_progress, reader.close())
    return reader.outcome()


def process_readable_stream_sync(
    chunks: Iterable[bytes], on_progress: OnProgress | None = None, *, format: Format | None = None
) -> Results:
    """The sync twin of `process_readable_stream`."""
    reader = _Reader(format)
    for chunk in chunks:
        _notify_sync(on_progress, reader.feed(chunk))
        if reader.finished:
            return reader.outcome()
    _notify_sync(on_progress, reader.close())
    return reader.outcome()


async def process_json_stream(
    source: bytes | AsyncIterable[bytes] | Iterable[bytes] | Iterable[Mapping[str, Any]],
    on_progress: OnProgress | None = None,
) -> Results:
    """Consume an NDJSON stream (bytes, byte chunks, or already-parsed objects)."""
    if isinstance(source, bytes):
        source = [source]
    if isinstance(source, AsyncIterable):
        return await process_readable_stream(source, on_progress, format="ndjson")
    reader = _Reader("ndjson")
    for item in source:
        items = reader.feed(item) if isinstance(item, bytes) else reader.object(item)
        await _notify(on_progress, items)
        if reader.finished:
            return reader.outcome()
    await _notify(on_progress, reader.close())
    return reader.outcome()


def process_json_stream_sync(
    source: bytes | Iterable[bytes] | Iterable[Mapping[str, Any]],
    on_progress: OnProgress | None = None,
) -> Results:
    """The sync twin of `process_json_stream`."""
    if isinstance(source, bytes):
        source = [source]
    reader = _Reader("ndjson")
    for item in source:
        items = reader.feed(item) if isinstance(item, bytes) else reader.object(item)
        _notify_sync(on_progress, items)
        if reader.finished:
            return reader.outcome()
    _notify_sync(on_progress, reader.close())
    return reader.outcome()


def _format_of(response: httpx.Response) -> Format | None:
    content_type = response.headers.get("content-type", "")
    if "ndjson" in content_type:
        return "ndjson"
    if "event-stream" in content_type:
        return "sse"
    return None


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds of a `Retry-After` header (delta-seconds, or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    seconds = parse_decimal(value.strip())
    if seconds is not None:
        return float(seconds)
    try:
        date = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, math.ceil(date.timestamp() - time.time()))


def _http_error(response: httpx.Response, body: bytes) -> StreamError:
    try:
        error = json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
        request_id = error.get("request_id")
    except (ValueError, KeyError, TypeError):
        code, message, request_id = "http_error", f"HTTP {response.status_code}", None
    request_id = request_id if isinstance(request_id, str) else None
    return StreamError(
        code,
        message,
        request_id,
        status_code=response.status_code,
        retry_after=_retry_after(response),
    )


async def process_streaming_response(
    response: httpx.Response, on_progress: OnProgress | None = None
) -> Results:
    """Consume an `httpx` streaming response from an ikproxy endpoint into `Results`.

    An HTTP error status raises `StreamError` with the body's error code and
    message (and `.status_code`); a connection lost mid-stream raises
    `IncompleteStream`. Outputs by reference (`RefIO`) get their absolute URL
    and download on first `aread()` / `read()`.
    """
    results = await _consume(response, _Reader(), on_progress)
    return _bind_refs(results, response, _Fetcher())


def process_streaming_response_sync(
    response: httpx.Response, on_progress: OnProgress | None = None
) -> Results:
    """The sync twin of `process_streaming_response`, for `httpx.Client` responses."""
    return _bind_refs(_consume_sync(response, _Reader(), on_progress), response, _Fetcher())


class _Fetcher:
    """Downloads outputs by reference: with the caller's httpx client when there is one."""

    def __init__(
        self, client: httpx.AsyncClient | None = None, sync_client: httpx.Client | None = None
    ) -> None:
        self.client = client
        self.sync_client = sync_client

    async def aget(self, url: str) -> bytes:
        import httpx

        if self.client is not None and not self.client.is_closed:
            return _checked(await self.client.get(url))
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as http:
            return _checked(await http.get(url))

    def get(self, url: str) -> bytes:
        import httpx

        if self.sync_client is not None and not self.sync_client.is_closed:
            return _checked(self.sync_client.get(url))
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0)) as http:
            return _checked(http.get(url))


def _checked(response: httpx.Response) -> bytes:
    if response.status_code >= 400:
        raise _http_error(response, response.content)
    return response.content


def _bind_refs(results: Results, response: httpx.Response, fetcher: _Fetcher) -> Results:
    """Resolve each `RefIO`'s URL against the run request's URL, and let it download."""
    for output in results.outputs:
        if isinstance(output, RefIO):
            output.bind(str(response.url.join(output.url)), fetcher)
    return results


async def _consume(
    response: httpx.Response, reader: _Reader, on_progress: OnProgress | None
) -> Results:
    import httpx

    if response.status_code >= 400:
        raise _http_error(response, await response.aread())
    reader.format = _format_of(response)
    try:
        async for chunk in response.aiter_bytes():
            await _notify(on_progress, reader.feed(chunk))
            if reader.finished:
                return reader.outcome()
    except httpx.TransportError:
        raise IncompleteStream("the connection was lost before the result or error event") from None
    await _notify(on_progress, reader.close())
    return reader.outcome()


def _consume_sync(
    response: httpx.Response, reader: _Reader, on_progress: OnProgress | None
) -> Results:
    import httpx

    if response.status_code >= 400:
        raise _http_error(response, response.read())
    reader.format = _format_of(response)
    try:
        for chunk in response.iter_bytes():
            _notify_sync(on_progress, reader.feed(chunk))
            if reader.finished:
                return reader.outcome()
    except httpx.TransportError:
        raise IncompleteStream("the connection was lost before the result or error event") from None
    _notify_sync(on_progress, reader.close())
    return reader.outcome()


# -- run: build the request, send it, consume the stream, resume if cut --------------

Image = Union[bytes, "tuple[str, bytes]"]


def _is_resume_position(last_id: str | None) -> bool:
    return bool(last_id) and parse_position(last_id or "") is not None


def _build(
    http: httpx.Client | httpx.AsyncClient,
    url: str,
    params: Mapping[str, Any] | None,
    image: Image | None,
    headers: Mapping[str, str] | None,
    format: Format | None,
) -> httpx.Request:
    query = {"format": format} if format else {}
    all_headers = {"Accept": NDJSON_MEDIA_TYPE if format == "ndjson" else SSE_MEDIA_TYPE}
    all_headers.update(headers or {})
    values = {
        k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (params or {}).items()
    }
    if image is None:
        return http.build_request("GET", url, params={**values, **query}, headers=all_headers)
    name, data = image if isinstance(image, tuple) else ("image", image)
    return http.build_request(
        "POST", url, params=query, data=values, files={"image": (name, data)}, headers=all_headers
    )


def _resume_request(
    http: httpx.Client | httpx.AsyncClient, request: httpx.Request, last_id: str
) -> httpx.Request:
    """A GET of the run request's URL naming the last event seen in `Last-Event-ID`."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _BODY_HEADERS}
    headers["Last-Event-ID"] = last_id
    return http.build_request("GET", request.url, headers=headers)


def _resume_delay(
    error: IkproxyError, position: str | None, attempt: int, max_retry_after: float
) -> float | None:
    """Seconds to wait before resuming after `error`, or None not to resume.

    A stream cut after a resumable event: a short backoff. A resume refused with
    429 or 503 and a `Retry-After` of at most `max_retry_after` seconds: that long.
    """
    if position is None:
        return None
    if isinstance(error, IncompleteStream):
        return 0.1 * 2.0**attempt
    if not isinstance(error, StreamError) or error.status_code not in (429, 503):
        return None
    if error.retry_after is None or error.retry_after > max_retry_after:
        return None
    return error.retry_after


#: The headers of the run request a resume does not repeat (it has no body; it names its own
#: last event).
_BODY_HEADERS = {"content-type", "content-length", "transfer-encoding", "last-event-id"}


async def run(
    url: str,
    params: Mapping[str, Any] | None = None,
    *,
    image: Image | None = None,
    headers: Mapping[str, str] | None = None,
    format: Format | None = None,
    on_progress: OnProgress | None = None,
    resume: int = 3,
    max_retry_after: float = 30.0,
    client: httpx.AsyncClient | None = None,
) -> Results:
    """Run a job through an ikproxy endpoint: the twin of the browser module's `run()`.

    Plain `params` go in a GET query string; with an `image` (bytes, or a
    `(filename, bytes)` pair) the request is a multipart POST. When the server
    keeps runs resumable, a stream cut by a lost connection is resumed from its
    last event id (the `Last-Event-ID` header), up to `resume` times; a resume
    refused with 429 or 503 and a `Retry-After` of at most `max_retry_after`
    seconds is tried again once that time has passed (cancel the task to stop).
    """
    import httpx

    own = client is None
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
    try:
        request = _build(http, url, params, image, headers, format)
        position: str | None = None
        for attempt in range(resume + 1):
            reader = _Reader()
            try:
                response = await http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise StreamError("network_error", "The server could not be reached.") from exc
            try:
                results = await _consume(response, reader, on_progress)
                return _bind_refs(results, response, _Fetcher(None if own else http))
            except (IncompleteStream, StreamError) as exc:
                if _is_resume_position(reader.last_id):
                    position = reader.last_id
                delay = _resume_delay(exc, position, attempt, max_retry_after)
                if attempt == resume or delay is None or position is None:
                    raise
                request = _resume_request(http, request, position)
            finally:
                await response.aclose()
            await anyio.sleep(delay)
        raise AssertionError("unreachable")
    finally:
        if own:
            await http.aclose()


def run_sync(
    url: str,
    params: Mapping[str, Any] | None = None,
    *,
    image: Image | None = None,
    headers: Mapping[str, str] | None = None,
    format: Format | None = None,
    on_progress: OnProgress | None = None,
    resume: int = 3,
    max_retry_after: float = 30.0,
    client: httpx.Client | None = None,
) -> Results:
    """The sync twin of `run`, on an `httpx.Client`."""
    import httpx

    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0))
    try:
        request = _build(http, url, params, image, headers, format)
        position: str | None = None
        for attempt in range(resume + 1):
            reader = _Reader()
            try:
                response = http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise StreamError("network_error", "The server could not be reached.") from exc
            try:
                results = _consume_sync(response, reader, on_progress)
                return _bind_refs(results, response, _Fetcher(sync_client=None if own else http))
            except (IncompleteStream, StreamError) as exc:
                if _is_resume_position(reader.last_id):
                    position = reader.last_id
                delay = _resume_delay(exc, position, attempt, max_retry_after)
                if attempt == resume or delay is None or position is None:
                    raise
                request = _resume_request(http, request, position)
            finally:
                response.close()
            time.sleep(delay)  # a backoff, or the Retry-After, before resuming
        raise AssertionError("unreachable")
    finally:
        if own:
            http.close()

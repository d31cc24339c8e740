"""Server-Sent Events: the WHATWG event stream (HTML, "9.2 Server-sent events").

Sans-I/O, in the style of h11: `encode` turns one `ServerSentEvent` into bytes, and
`SSEDecoder` turns bytes, fed in chunks of any size, back into events, following
"9.2.5 Parsing an event stream" and "9.2.6 Interpreting an event stream" to the letter.
Nothing here does I/O or needs an event loop; `iter_events` and `aiter_events` wrap a
decoder around an iterable or async iterable of chunks.

Encoding (`encode`, `encode_comment`, `encode_retry`):

- An event is written as ``event: ``, ``id: ``, ``retry: `` (each only when set), then
  one ``data: `` line per line of data, then a blank line. Every field is written as
  ``name: value``: the reader drops exactly that one space, so a value that starts with
  a space keeps it. Line ends are LF.
- Data is split on CR, LF and CRLF. SSE cannot carry a CR inside data, so a reader gets
  the data back with every CR and CRLF turned into LF. Empty data still gets its
  ``data: `` line, so the event is dispatched. ``id=""`` is sent: it resets the reader's
  last event id.
- What cannot be sent raises instead of being altered: an event name containing CR or
  LF, an id containing CR, LF or NUL, a negative or non-integer retry (a bool is not an
  integer here), text with lone surrogates. `str` subclasses (a `StrEnum`, say) are
  sent as their text, whatever their `__str__` says.
- A comment (a keepalive) is one ``: text`` line per line of text, without a blank line:
  readers ignore comments wherever they are. `encode_retry` ends with a blank line, so
  the retry line never joins the fields of the event after it.

Decoding (`SSEDecoder`):

- UTF-8 with replacement of invalid bytes, even when a character is split across
  chunks; one leading byte order mark is dropped. CR, LF and CRLF end lines, also when a
  CRLF pair is split across chunks.
- An event comes out of the very `feed()` call that delivers its blank line; a CR at the
  end of a chunk is already a line end, nothing is held back. An unfinished event at the
  end of the stream is discarded, as the spec says, so `close()` returns no event.
- A dispatched event's `event` is ``"message"`` unless an ``event`` field named it; its
  `id` is the last event id in force (``""`` after a reset, None if the stream never sent
  one) and its `retry` the reconnection time in force (None if never set).
- `max_event_bytes` bounds one event: the bytes of its lines (comments included, each
  line end counted as one byte) before the blank line that ends it. Past it `SSEError`
  is raised, so a stream that never sends a blank line cannot exhaust memory.

The decoder works on bytes and decodes UTF-8 a whole number of lines at a time: a line
end byte never occurs inside a UTF-8 sequence, so decoding lines one by one or many at
once gives the same text. Each byte is scanned a bounded number of times (linear time),
and an unfinished line is kept as a list of pieces, decoded and joined once when it
ends. Large data is encoded a slice at a time into one buffer, so encoding a 20 MiB
event takes about 20 MiB of extra memory, and decoding one about 40 MiB.
"""

from __future__ import annotations

import codecs
import io
import operator
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, SupportsIndex, cast

from ikproxy.decimals import parse_decimal
from ikproxy.errors import IkproxyError

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "SSEDecoder",
    "SSEError",
    "ServerSentEvent",
    "aiter_events",
    "encode",
    "encode_comment",
    "encode_retry",
    "iter_events",
]

#: Default limit on one event: room for a result carrying a base64 image of about
#: 48 MB, small enough that a broken or hostile stream cannot exhaust memory.
DEFAULT_MAX_EVENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, init=False)
class ServerSentEvent:
    """One event: its `data`, and optionally its type (`event`), `id` and `retry` (ms)."""

    data: str = ""
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    def __init__(
        self,
        data: str = "",
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
    ) -> None:
        # The __init__ a frozen dataclass generates assigns through object.__setattr__,
        # which is much slower than filling the slots directly, as this one does.
        _set_data(self, data)
        _set_event(self, event)
        _set_id(self, id)
        _set_retry(self, retry)


# The slot descriptors' setters, which a frozen dataclass's __setattr__ does not guard.
_set_data: Callable[[ServerSentEvent, str], None] = vars(ServerSentEvent)["data"].__set__
_set_event: Callable[[ServerSentEvent, str | None], None] = vars(ServerSentEvent)["event"].__set__
_set_id: Callable[[ServerSentEvent, str | None], None] = vars(ServerSentEvent)["id"].__set__
_set_retry: Callable[[ServerSentEvent, int | None], None] = vars(ServerSentEvent)["retry"].__set__


class SSEError(IkproxyError, ValueError):
    """A stream broke a limit of `SSEDecoder`.

    `events` holds the events decoded from the same `feed()` call before the problem, so
    nothing that arrived intact is lost.
    """

    code = "invalid_stream"
    status = 502
    public_message = "The stream is not valid SSE."

    def __init__(self, message: str, events: list[ServerSentEvent] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.events: list[ServerSentEvent] = events if events is not None else []

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.events))


# -- Encoding ---------------------------------------------------------------------------


def encode(event: ServerSentEvent) -> bytes:
    """The wire bytes of one event, blank line included (see the module docstring)."""
    data = event.data
    if type(data) is not str:
        data = _text(data, "data must be str")
    head = ""
    name = event.event
    if name is not None:
        if type(name) is not str:
            name = _text(name, "event must be str or None")
        if "\n" in name or "\r" in name:
            raise ValueError("event must not contain CR or LF")
        head = f"event: {name}\n"
    event_id = event.id
    if event_id is not None:
        if type(event_id) is not str:
            event_id = _text(event_id, "id must be str or None")
        if "\n" in event_id or "\r" in event_id or "\0" in event_id:
            raise ValueError("id must not contain CR, LF or NUL")
        head = f"{head}id: {event_id}\n"
    if event.retry is not None:
        head = f"{head}retry: {_retry_ms(event.retry)}\n"
    try:
        if len(data) > _SLICE:
            return _encode_large(head, data)
        # Lines of data become `data: ` lines.
        if "\r" in data:
            data = data.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" in data:
            data = data.replace("\n", "\ndata: ")
        return f"{head}data: {data}\n\n".encode()
    except UnicodeEncodeError:
        raise _surrogate_error(event) from None


#: Large data is encoded this many characters at a time.
_SLICE = 64 * 1024


def _encode_large(head: str, data: str) -> bytes:
    """`encode` for large data, one slice at a time into one growing buffer.

    `BytesIO` grows its buffer in place and `getvalue()` hands it over without a copy,
    so memory peaks at about the size of the result, plus one slice.
    """
    out = io.BytesIO()
    out.write(f"{head}data: ".encode())
    start = 0
    while start < len(data):
        end = start + _SLICE
        if data[end - 1 : end + 1] == "\r\n":
            end += 1  # a CRLF pair is one line end: keep it in one slice
        piece = data[start:end].encode()
        if b"\r" in piece:
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" in piece:
            piece = piece.replace(b"\n", b"\ndata: ")
        out.write(piece)
        start = end
    out.write(b"\n\n")
    return out.getvalue()


def encode_comment(text: str = "") -> bytes:
    """A comment, one ``: text`` line per line of `text` (no blank line: see the module)."""
    if type(text) is not str:
        text = _text(text, "comment must be str")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    try:
        return "".join(f": {line}\n" if line else ":\n" for line in lines).encode()
    except UnicodeEncodeError:
        raise ValueError("comment must not contain lone surrogates") from None


def encode_retry(ms: int) -> bytes:
    """A ``retry:`` line setting the reader's reconnection time, then a blank line."""
    return f"retry: {_retry_ms(ms)}\n\n".encode()


def _text(value: object, requirement: str) -> str:
    """The text of a `str` subclass as a plain `str`, or TypeError(`requirement`)."""
    if isinstance(value, str):
        return str.__str__(value)
    raise TypeError(f"{requirement}, not {type(value).__name__}")


def _retry_ms(value: object) -> int:
    """`value` as a non-negative int, or ValueError: bools and floats are refused."""
    if not isinstance(value, bool):
        try:
            ms = operator.index(cast(SupportsIndex, value))  # int, numpy integers, ...
        except TypeError:
            pass
        else:
            if ms >= 0:
                return ms
            raise ValueError(f"retry must be a non-negative int, not {ms}")
    raise ValueError(f"retry must be a non-negative int, not {type(value).__name__}")


def _surrogate_error(event: ServerSentEvent) -> ValueError:
    """The error naming the field of `event` that cannot be encoded as UTF-8."""
    for field in ("event", "id", "data"):
        value = getattr(event, field)
        if value is not None:
            try:
                str.encode(value)
            except UnicodeEncodeError:
                return ValueError(f"{field} must not contain lone surrogates")
    raise AssertionError("unreachable: no field holds a lone surrogate")  # pragma: no cover


# -- Decoding ---------------------------------------------------------------------------

_BOM = b"\xef\xbb\xbf"
_LONE_CR = re.compile(rb"\r(?!\n)")
_FIELDS = (b"data", b"event", b"id", b"retry")

# The decoder fills the slots of new events inline, saving a call to `__init__` per event
# in its busiest loop.
_new_event = object.__new__


class SSEDecoder:
    """Incremental event stream parser: `feed()` bytes as they arrive, `close()` at the end.

    Each event comes out of the `feed()` call that delivered the blank line ending it.
    `last_event_id` and `retry` follow the stream (what a browser would reconnect with).
    An event longer than `max_event_bytes` raises `SSEError`, after which the decoder is
    dead: every later `feed()` or `close()` raises the same error again.
    """

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        if isinstance(max_event_bytes, bool) or not isinstance(max_event_bytes, int):
            raise TypeError(f"max_event_bytes must be an int, not {type(max_event_bytes).__name__}")
        if max_event_bytes < 1:
            raise ValueError(f"max_event_bytes must be at least 1, not {max_event_bytes}")
        self._limit = max_event_bytes
        # Bytes before the stream's first line: None once the BOM question is settled.
        self._start: bytes | None = b""
        self._skip_lf = False  # the last chunk ended with CR: drop an LF that comes next
        self._tail: list[bytes] = []  # pieces of the unfinished line (never empty ones)
        self._at_line_start = True
        self._event_bytes = 0  # bytes of the current event so far, for the limit
        # The spec's buffers, and what it calls the event source's last event ID string.
        self._data: list[str] = []
        self._type = ""
        self._id_buffer: str | None = None
        self._last_event_id: str | None = None
        self._retry: int | None = None
        self._failure: str | None = None
        self._closed = False

    @property
    def max_event_bytes(self) -> int:
        """The largest event accepted, in bytes (see the module docstring)."""
        return self._limit

    @property
    def last_event_id(self) -> str | None:
        """The id to reconnect with (``Last-Event-ID``): None if the stream never set one.

        As in a browser, it changes at a blank line, not at the ``id`` line itself.
        """
        return self._last_event_id

    @property
    def retry(self) -> int | None:
        """The reconnection time in milliseconds the stream asked for, or None."""
        return self._retry

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[ServerSentEvent]:
        """Take the next bytes (any bytes-like object); return the events they complete."""
        if self._failure is not None:
            raise SSEError(self._failure)
        if self._closed:
            raise RuntimeError("feed() called after close()")
        if type(chunk) is not bytes:
            if not isinstance(chunk, (bytearray, memoryview)):
                raise TypeError(f"feed() takes bytes, not {type(chunk).__name__}")
            chunk = bytes(chunk)
        if not chunk:
            return []
        if self._start is not None:
            # Hold back the first bytes until we know whether they are a BOM.
            chunk = self._start + chunk
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._start = chunk
                return []
            self._start = None
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        elif self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if not chunk:
            return []
        if b"\r" in chunk:
            self._skip_lf = chunk[-1] == 13  # CR: the first half of a CRLF, maybe
            if _LONE_CR.search(chunk) is None:
                chunk = chunk.translate(None, b"\r")  # only CRLF pairs: twice as fast
            else:
                chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = chunk.rfind(b"\n")  # the last line end
        over = self._count(chunk, end)
        if over >= 0:
            events = self._parse(chunk[:over], chunk.rfind(b"\n", 0, over)) if over else []
            self._failure = f"event exceeds max_event_bytes ({self._limit} bytes)"
            self._tail = []
            self._data = []
            raise SSEError(self._failure, events)
        return self._parse(chunk, end)

    def close(self) -> list[ServerSentEvent]:
        """Signal the end of the stream. Always [] (an unfinished event is discarded)."""
        if self._failure is not None:
            raise SSEError(self._failure)
        self._closed = True
        self._tail = []
        self._data = []
        return []

    # -- internals ----------------------------------------------------------------------

    def _count(self, chunk: bytes, end: int) -> int:
        """Add `chunk` (line ends already LF, the last at `end`) to the current event's size.

        Returns -1, or the index of the byte of `chunk` that makes an event exceed the
        limit. Most chunks need one search for their last blank line.
        """
        count = self._event_bytes
        size = len(chunk)
        line_start = self._at_line_start
        self._at_line_start = chunk[-1] == 10
        if count + size <= self._limit:
            if end < 0:
                self._event_bytes = count + size
                return -1
            blank = chunk.rfind(b"\n\n", 0, end + 1)
            if blank >= 0:
                self._event_bytes = size - blank - 2
            elif line_start and chunk[0] == 10:
                self._event_bytes = size - 1
            else:
                self._event_bytes = count + size
            return -1
        # Near the limit: walk the blank lines of the chunk, one event at a time.
        begin = 0  # where the current event's bytes in this chunk begin
        if line_start and chunk[0] == 10:
            count, begin = 0, 1
        while True:
            found = chunk.find(b"\n\n", max(begin - 1, 0))
            if found < 0:
                break
            blank = found + 1
            if count + blank - begin > self._limit:
                return begin + self._limit - count
            count, begin = 0, blank + 1
        if count + size - begin > self._limit:
            return begin + self._limit - count
        self._event_bytes = count + size - begin
        return -1

    def _parse(self, chunk: bytes, end: int) -> list[ServerSentEvent]:
        """Split `chunk` (line ends already LF, the last at `end`) into lines, interpret them."""
        if end < 0:
            self._tail.append(chunk)
            return []
        events: list[ServerSentEvent] = []
        start = 0
        if self._tail:
            start = chunk.find(b"\n") + 1
            if start > 1:
                self._tail.append(chunk[: start - 1])
            self._carried_line()
        if start <= end:
            self._lines(chunk[start:end].decode("utf-8", "replace").split("\n"), events)
        if end + 1 < len(chunk):
            self._tail = [chunk[end + 1 :]]
        return events

    def _lines(self, lines: list[str], events: list[ServerSentEvent]) -> None:
        """Interpret complete lines; the fast path (it must agree with `_carried_line`)."""
        data = self._data
        event_type = self._type
        id_buffer = self._id_buffer
        last_id = self._last_event_id
        retry = self._retry
        append = events.append
        for line in lines:
            if line:
                # Most lines read "name: value": one partition splits them. Otherwise
                # (no space after the first colon, or no colon) split at the colon.
                name, space, value = line.partition(": ")
                if not space or ":" in name:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event_type = value
                elif name == "id":
                    if "\0" not in value:
                        id_buffer = value
                elif name == "retry":
                    retry = _parse_retry(value, retry)
                # Anything else, comments (name "") included, is ignored.
                continue
            # A blank line: dispatch.
            last_id = id_buffer
            if data:
                event = _new_event(ServerSentEvent)
                _set_data(event, "\n".join(data))
                _set_event(event, event_type or "message")
                _set_id(event, last_id)
                _set_retry(event, retry)
                append(event)
                data = []
            event_type = ""
        self._data = data
        self._type = event_type
        self._id_buffer = id_buffer
        self._last_event_id = last_id
        self._retry = retry

    def _carried_line(self) -> None:
        """Interpret the line held in `_tail` (never blank), decoding only what is used."""
        pieces = self._tail
        self._tail = []
        # Merge small leading pieces until the field name, colon and optional space can
        # be told apart: the known names have at most 5 bytes.
        first = pieces[0]
        used = 1
        while len(first) < 8 and used < len(pieces):
            first += pieces[used]
            used += 1
        colon = first.find(b":")
        if colon < 0:
            if used < len(pieces):
                return  # a name of 8 bytes or more: not a known field
            name, value = first, ""
        else:
            name = first[:colon]
            if name not in _FIELDS:
                return
            start = colon + 2 if first[colon + 1 : colon + 2] == b" " else colon + 1
            rest = [first[start:], *pieces[used:]]
            del pieces, first
            value = _decode_pieces(rest)
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._type = value
        elif name == b"id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == b"retry":
            self._retry = _parse_retry(value, self._retry)


def _decode_pieces(pieces: list[bytes]) -> str:
    """UTF-8 decode the concatenation of `pieces`, emptying the list as it goes.

    Decoding piece by piece into small strings, then joining them, writes the text into
    one large block (the result) rather than two (joined bytes, then text).
    """
    if len(pieces) == 1:
        return pieces.pop().decode("utf-8", "replace")
    decode = codecs.getincrementaldecoder("utf-8")("replace").decode
    parts = []
    for index, piece in enumerate(pieces):
        parts.append(decode(piece))
        pieces[index] = b""
    parts.append(decode(b"", True))
    return "".join(parts)


def _parse_retry(value: str, current: int | None) -> int | None:
    """The reconnection time after a ``retry`` field: `value` if all ASCII digits.

    A value with more digits than `int()` accepts (`sys.get_int_max_str_digits`) is
    ignored rather than raising.
    """
    number = parse_decimal(value.lstrip("0") or "0" if value else "")
    return current if number is None else number


def iter_events(
    chunks: Iterable[bytes], *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> Iterator[ServerSentEvent]:
    """Yield the events of a stream given as an iterable of byte chunks."""
    decoder = SSEDecoder(max_event_bytes)
    try:
        for chunk in chunks:
            yield from decoder.feed(chunk)
        yield from decoder.close()
    except SSEError as exc:
        yield from exc.events
        exc.events = []
        raise


async def aiter_events(
    chunks: AsyncIterable[bytes], *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> AsyncIterator[ServerSentEvent]:
    """Yield the events of a stream given as an async iterable of byte chunks."""
    decoder = SSEDecoder(max_event_bytes)
    try:
        async for chunk in chunks:
            for event in decoder.feed(chunk):
                yield event
        for event in decoder.close():
            yield event
    except SSEError as exc:
        for event in exc.events:
            yield event
        exc.events = []
        raise

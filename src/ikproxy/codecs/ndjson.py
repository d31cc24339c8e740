"""Newline-delimited JSON (NDJSON 1.0): one JSON text per line, UTF-8, LF or CRLF line ends.

Sans-I/O, in the style of h11: `encode_line` turns one value into one line of bytes, and
`NDJSONDecoder` turns bytes, fed in chunks of any size, back into values. Nothing here
does I/O or needs an event loop; `iter_values` and `aiter_values` wrap a decoder around
an iterable or async iterable of chunks.

The rules, in both directions:

- A line is one JSON text (RFC 8259) in strict UTF-8, without a byte order mark. NaN,
  Infinity and lone surrogates (unpaired ``\\ud800`` to ``\\udfff`` escapes) are not JSON
  and are rejected.
- A line ends with LF or CRLF. Blank and whitespace-only lines are skipped but still
  counted, so error line numbers match what an editor shows. A last line without a line
  end is accepted when the stream is closed.
- A line may hold at most ``max_line_bytes`` bytes (line end excluded). The decoder
  notices an over-long line while it is still arriving, so memory stays bounded.

Errors say which line (1-based) and what is wrong, such as ``line 3: invalid JSON:
Expecting value at column 1``; the JSON syntax details (columns count characters) are
those of Python's `json` module.

orjson is used when it is installed and the standard library's `json` otherwise. Both
backends accept and reject the same input, decode to the same values and raise the same
exceptions with the same messages; where orjson cannot do what `json` does (integers
beyond 64 bits, deep nesting, dict keys that are not `str`), the standard library handles
that value. Two differences remain. Floats smaller than 1e-4 in magnitude are spelled
differently (orjson writes ``1e-7`` and ``0.00001``, `json` writes ``1e-07`` and
``1e-05``; both are the shortest text that reads back as the same float). And a line
nested more deeply than `json` can read (about 990 levels on Python 3.10 and 3.11, more on
later versions) is still read by orjson if it is at most 1024 levels deep.
"""

from __future__ import annotations

import enum
import json
import re
import sys
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from functools import partial
from typing import Any

from ikproxy.errors import IkproxyError

try:
    import orjson as _orjson_module
except ImportError:  # pragma: no cover - exercised by setting `_orjson = None`
    _orjson_module = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "NDJSONDecoder",
    "NDJSONError",
    "aiter_values",
    "encode_line",
    "iter_values",
]

#: The optional orjson module, or None to use the standard library. Read at each
#: `encode_line` call and when an `NDJSONDecoder` is created.
_orjson: Any = _orjson_module

#: Default limit on one line's size: room for a result carrying a base64 image of about
#: 12 MB, small enough that a broken or hostile stream cannot exhaust memory.
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024


class NDJSONError(IkproxyError, ValueError):
    """A stream is not valid NDJSON: `line` is the 1-based line number, `reason` says why.

    `values` holds the values decoded from the same `feed()` call before the bad line, so
    nothing that arrived intact is lost (it is empty when a dead decoder raises again).
    """

    code = "invalid_stream"
    status = 502
    public_message = "The stream is not valid NDJSON."

    def __init__(self, reason: str, line: int, values: list[Any] | None = None) -> None:
        super().__init__(f"line {line}: {reason}")
        self.reason = reason
        self.line = line
        self.values: list[Any] = values if values is not None else []

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.line, self.values))


# -- Encoding ---------------------------------------------------------------------------

_NAN_MESSAGE = "NaN and Infinity are not valid JSON"


def _too_many_digits() -> str:
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    return f"integer has more than {limit} digits (the limit set by sys.set_int_max_str_digits)"


# orjson natively encodes dataclasses and datetimes, which `json` refuses: pass them back.
_ORJSON_DUMPS_OPTIONS = (
    _orjson_module.OPT_APPEND_NEWLINE
    | _orjson_module.OPT_PASSTHROUGH_DATACLASS
    | _orjson_module.OPT_PASSTHROUGH_DATETIME
    if _orjson_module is not None
    else 0
)
_KEY_TYPES = (str, int, float, bool, type(None))


def _type_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _default(obj: Any) -> Any:
    """Encode what orjson also encodes natively, and name the type of anything else."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, uuid.UUID):
        return str(obj)
    raise TypeError(f"cannot encode object of type {_type_name(type(obj))} as JSON")


_std_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default
)


def _bad_key_type(obj: Any) -> type | None:
    """The type of the first dict key `json` refuses, in the order `json` visits them."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, _KEY_TYPES):
                return type(key)
            found = _bad_key_type(value)
            if found is not None:
                return found
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            found = _bad_key_type(item)
            if found is not None:
                return found
    elif isinstance(obj, enum.Enum) and not isinstance(obj, (str, int, float)):
        return _bad_key_type(obj.value)
    return None


def _encode_std(obj: Any) -> bytes:
    """Encode with the standard library: the reference behaviour, errors included."""
    try:
        text = _std_encoder.encode(obj)
    except ValueError as exc:
        if str(exc).startswith("Out of range float values"):
            raise ValueError(_NAN_MESSAGE) from None
        if str(exc) == "Circular reference detected":
            raise ValueError("circular reference: a list or dict contains itself") from None
        if "integer string conversion" in str(exc):
            raise ValueError(_too_many_digits()) from None
        raise
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except TypeError:
        key_type = _bad_key_type(obj)
        if key_type is None:
            raise  # raised by _default, already in our words
        raise TypeError(
            f"cannot encode dict key of type {_type_name(key_type)} as JSON"
            " (keys must be str, int, float, bool or None)"
        ) from None
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"lone surrogate \\u{ord(text[exc.start]):04x} in string") from None


class _Unusual(Exception):
    """Raised by `_all_finite` on a type it does not walk (an enum, a subclass, ...)."""


_L = ord("l")
_SCALARS = frozenset({str, int, bool, type(None)})
_CONTAINERS = frozenset({dict, list, tuple})


def _all_finite(obj: Any) -> bool:
    """True if the dict, list or tuple `obj` holds no NaN or infinite float.

    Walks plain JSON types only and raises `_Unusual` on anything else.
    """
    values = obj.values() if type(obj) is dict else obj
    for value in values:
        cls = type(value)
        if cls in _SCALARS:
            continue
        if cls is float:
            if value - value != 0.0:  # nan - nan and inf - inf are nan
                return False
        elif cls in _CONTAINERS:
            if not _all_finite(value):
                return False
        else:
            raise _Unusual
    return True


def encode_line(obj: Any) -> bytes:
    """Encode `obj` as one NDJSON line: compact UTF-8 JSON followed by ``\\n``.

    Accepts None, bool, int, float, str, list, tuple and dict (and their subclasses;
    dict keys may be str, int, float, bool or None and are written as strings, as `json`
    does), plus `enum.Enum` members (as their value) and `uuid.UUID` (as its string).
    Raises ValueError for NaN, Infinity, a lone surrogate, a circular reference or nesting
    deeper than Python's recursion limit allows, and TypeError naming the type of anything
    else.
    """
    orjson = _orjson
    if orjson is not None:
        try:
            line: bytes = orjson.dumps(obj, option=_ORJSON_DUMPS_OPTIONS)
        except TypeError:
            pass  # a case orjson does not cover: the standard library decides
        else:
            # orjson writes NaN and Infinity as null, so a line with null needs a closer
            # look. Most lines have no "l" at all, and one byte is quicker to find.
            if _L not in line or b"null" not in line:
                return line
            try:
                if type(obj) in _CONTAINERS and _all_finite(obj):
                    return line
            except _Unusual:
                pass
            _encode_std(obj)  # raises if there is a NaN or Infinity anywhere
            return line
    return _encode_std(obj)


# -- Decoding ---------------------------------------------------------------------------

_BOM = b"\xef\xbb\xbf"
_JSON_WHITESPACE = b" \t\r"
_BLANK: Any = object()  # what `_parse_line` returns for a blank line

# orjson reads integers beyond 64 bits as floats; a line with a run of 19 or more digits
# may hold one, so the standard library reads it instead (18 digits always fit).
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN = b"0" * 19

# A JSON string escape: a surrogate pair, a lone surrogate (group 1), or anything else.
_ESCAPE = re.compile(
    rb"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    rb"|u([dD][89a-fA-F][0-9a-fA-F]{2})|.)",
    re.DOTALL,
)


class _LineError(Exception):
    """One line is not valid; carries the reason, without the line number."""


class _Constant(ValueError):
    """`json` met NaN, Infinity or -Infinity."""


def _reject_constant(name: str) -> Any:
    raise _Constant(name)


_std_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def _loads_std(line: bytes) -> Any:
    """Decode one line with the standard library, ignoring lone surrogates.

    The quick path for a chunk with no ``\\u`` escape; any ValueError means "look closer".
    """
    return _std_decoder.decode(line.decode("utf-8"))


def _has_long_digit_run(data: bytes) -> bool:
    return _LONG_DIGIT_RUN in data.translate(_DIGITS_TO_ZERO)


def _lone_surrogate(line: bytes) -> str | None:
    for match in _ESCAPE.finditer(line):
        if match[1] is not None:
            return "\\u" + match[1].decode("ascii").lower()
    return None


def _parse_line(line: bytes) -> Any:
    """Decode one line (without its LF): the reference behaviour, with exact reasons.

    Returns the value, or `_BLANK` for a blank line; raises `_LineError` otherwise.
    """
    if not line.strip(_JSON_WHITESPACE):
        return _BLANK
    if line.startswith(_BOM):
        raise _LineError("unexpected byte order mark (NDJSON is UTF-8 without BOM)")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _LineError(f"invalid UTF-8 at byte {exc.start + 1}") from None
    try:
        value = _std_decoder.decode(text)
    except _Constant as exc:
        raise _LineError(f"invalid JSON: {exc} is not allowed") from None
    except json.JSONDecodeError as exc:
        message = exc.msg.removesuffix(" at")
        raise _LineError(f"invalid JSON: {message} at column {exc.colno}") from None
    except RecursionError:
        raise _LineError("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        if "integer string conversion" not in str(exc):  # pragma: no cover - none known
            raise _LineError(f"invalid JSON: {exc}") from None
        raise _LineError(f"invalid JSON: {_too_many_digits()}") from None
    surrogate = _lone_surrogate(line) if b"\\u" in line else None
    if surrogate is not None:
        raise _LineError(f"lone surrogate {surrogate} in string")
    return value


class NDJSONDecoder:
    """Incremental NDJSON decoder: `feed()` bytes as they arrive, `close()` at the end.

    Each value comes out of the `feed()` call that delivered the LF ending its line; a last
    line without LF comes out of `close()`. Invalid input raises `NDJSONError`, after which
    the decoder is dead: every later `feed()` or `close()` raises the same error again.
    `max_line_bytes` (default 16 MiB) bounds one line, line end excluded, and so the memory
    held between calls.

    The JSON backend (orjson if installed, else `json`) is chosen when the decoder is made.
    """

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if isinstance(max_line_bytes, bool) or not isinstance(max_line_bytes, int):
            raise TypeError(f"max_line_bytes must be an int, not {type(max_line_bytes).__name__}")
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1, not {max_line_bytes}")
        self.max_line_bytes = max_line_bytes
        self._orjson_loads: Callable[[bytes], Any] | None = (
            None if _orjson is None else _orjson.loads
        )
        self._pending: list[bytes] = []  # pieces of the unfinished line
        self._pending_size = 0
        self._lines_done = 0  # complete lines consumed so far
        self._failure: tuple[str, int] | None = None
        self._closed = False

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Any]:
        """Take the next bytes of the stream; return the values of the lines they complete."""
        self._check_usable()
        if self._closed:
            raise RuntimeError("feed() called after close()")
        if type(chunk) is not bytes:
            if not isinstance(chunk, (bytearray, memoryview)):
                raise TypeError(f"feed() takes bytes, not {type(chunk).__name__}")
            chunk = bytes(chunk)
        if b"\n" not in chunk:
            if chunk:
                self._hold(chunk, [])
            return []
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if self._pending:
            self._pending.append(lines[0])
            lines[0] = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
            joined = True
        else:
            joined = False
        values = self._decode(lines, chunk, joined)
        self._lines_done += len(lines)
        if rest:
            self._hold(rest, values)
        return values

    def close(self) -> list[Any]:
        """Signal the end of the stream; return the value of a last line without LF, if any."""
        self._check_usable()
        if self._closed:
            return []
        self._closed = True
        if not self._pending:
            return []
        line = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        if len(line) > self.max_line_bytes:  # a CR without LF belongs to the line
            raise self._too_long_error(self._lines_done + 1, [])
        loads = self._orjson_loads
        if loads is not None and _has_long_digit_run(line):
            loads = None
        return self._decode_each([line], loads, check_each=False)

    # -- internals ----------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise NDJSONError(*self._failure)

    def _fail(self, reason: str, lineno: int, values: list[Any]) -> NDJSONError:
        self._failure = (reason, lineno)
        self._pending.clear()
        self._pending_size = 0
        return NDJSONError(reason, lineno, values)

    def _hold(self, piece: bytes, values: list[Any]) -> None:
        """Keep `piece` of an unfinished line, or fail as soon as the line is too long."""
        self._pending.append(piece)
        self._pending_size += len(piece)
        excess = self._pending_size - self.max_line_bytes
        # One byte over is fine if it is a CR: an LF may follow to make it a line end.
        if excess > 1 or (excess == 1 and not piece.endswith(b"\r")):
            raise self._too_long_error(self._lines_done + 1, values)

    def _too_long_error(self, lineno: int, values: list[Any]) -> NDJSONError:
        return self._fail(f"line exceeds {self.max_line_bytes} bytes", lineno, values)

    def _too_long(self, line: bytes) -> bool:
        size = len(line)
        if size <= self.max_line_bytes:
            return False
        return size - line.endswith(b"\r") > self.max_line_bytes

    def _decode(self, lines: list[bytes], chunk: bytes, joined: bool) -> list[Any]:
        """Decode complete lines (LF removed).

        `chunk` holds every line but perhaps the first, which `joined` says was completed
        from pending pieces.
        """
        if joined and self._too_long(lines[0]):
            raise self._too_long_error(self._lines_done + 1, [])
        # Pick the quick decoder for this chunk, if one is safe: see the module constants.
        fast: Callable[[bytes], Any] | None
        careful: Callable[[bytes], Any] | None
        digits = False  # some line may hold a long integer: choose the backend line by line
        if self._orjson_loads is not None:
            digits = _has_long_digit_run(chunk) or (joined and _has_long_digit_run(lines[0]))
            fast = None if digits else self._orjson_loads
            careful = self._orjson_loads
        else:
            escaped = b"\\u" in chunk or (joined and b"\\u" in lines[0])
            fast = None if escaped else _loads_std
            careful = None
        check_each = len(chunk) > self.max_line_bytes  # else no line here can be too long
        if fast is not None and not check_each:
            try:
                return list(map(fast, lines))
            except (ValueError, RecursionError):
                pass  # a blank or bad line: go again, line by line, to find it
        return self._decode_each(lines, careful, check_each, digits)

    def _decode_each(
        self,
        lines: list[bytes],
        loads: Callable[[bytes], Any] | None,
        check_each: bool,
        digits: bool = False,
    ) -> list[Any]:
        """Decode line by line, skipping blank lines and naming the first bad one.

        `loads` is tried first when given, except on a line with a long digit run when
        `digits` is set; `_parse_line` decides whenever it fails. So each line's result
        depends on that line alone, never on the lines that arrived in the same chunk.
        """
        values: list[Any] = []
        for index, line in enumerate(lines):
            lineno = self._lines_done + index + 1
            if check_each and self._too_long(line):
                raise self._too_long_error(lineno, values)
            if loads is not None and not (digits and _has_long_digit_run(line)):
                try:
                    values.append(loads(line))
                    continue
                except (ValueError, RecursionError):
                    pass
            try:
                value = _parse_line(line)
            except _LineError as exc:
                raise self._fail(str(exc), lineno, values) from None
            if value is not _BLANK:
                values.append(value)
        return values


def _drain(step: Callable[[], list[Any]]) -> Iterator[Any]:
    """Yield the values of one decoder step; on error, those before the bad line first."""
    try:
        values = step()
    except NDJSONError as exc:
        values, exc.values = exc.values, []  # handed over here, not twice
        yield from values
        raise
    yield from values


def iter_values(
    chunks: Iterable[bytes], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[Any]:
    """Yield the values of an NDJSON stream given as an iterable of byte chunks."""
    decoder = NDJSONDecoder(max_line_bytes)
    for chunk in chunks:
        yield from _drain(partial(decoder.feed, chunk))
    yield from _drain(decoder.close)


async def aiter_values(
    chunks: AsyncIterable[bytes], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> AsyncIterator[Any]:
    """Yield the values of an NDJSON stream given as an async iterable of byte chunks."""
    decoder = NDJSONDecoder(max_line_bytes)
    async for chunk in chunks:
        for value in _drain(partial(decoder.feed, chunk)):
            yield value
    for value in _drain(decoder.close):
        yield value

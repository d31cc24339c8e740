"""Both decoders fuzzed: only their own error type, and results independent of chunking.

Run longer with HYPOTHESIS_PROFILE=fuzz (see tests/conftest.py).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ikproxy.codecs.ndjson import NDJSONDecoder, NDJSONError
from ikproxy.codecs.sse import SSEDecoder, SSEError

# Pieces that meet the decoders' corner cases: line ends split anywhere, deep nesting on
# either side of the standard library's limit, integers past 64 bits and past Python's
# digit limit, escapes, lone surrogates, invalid UTF-8, a BOM, SSE fields.
_PIECES = st.sampled_from(
    [
        b"\n",
        b"\r",
        b"\r\n",
        b" ",
        b"{}",
        b'{"a":1}',
        b"[1,2]",
        b"[" * 1020 + b"]" * 1020,
        b"[" * 2000 + b"]" * 2000,
        b"1234567890123456789",
        b"-98765432109876543210",
        b"9" * 4301,
        b'"\\u00e9"',
        b'"\\ud800"',
        b'"\\ud83d\\ude00"',
        b"\xff",
        b"\xc3\xa9",
        b"\xef\xbb\xbf",
        b"NaN",
        b"1e400",
        b"true",
        b"null",
        b'"x"',
        b"data: hello",
        b"data:",
        b"event: progress",
        b"id: 7",
        b"id: a\x00b",
        b"retry: 1000",
        b"retry: x",
        b": comment",
        b"field-without-colon",
    ]
)
streams = st.lists(st.one_of(_PIECES, st.binary(max_size=8)), max_size=12).map(b"".join)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


def _ndjson(chunks: list[bytes], limit: int) -> tuple[list[Any], Any]:
    """Every value decoded, and the error (reason, line) if the stream failed."""
    decoder = NDJSONDecoder(max_line_bytes=limit)
    values: list[Any] = []
    try:
        for chunk in chunks:
            values.extend(decoder.feed(chunk))
        values.extend(decoder.close())
    except NDJSONError as exc:
        values.extend(exc.values)
        return values, (exc.reason, exc.line)
    return values, None


def _sse(chunks: list[bytes], limit: int) -> tuple[list[Any], Any]:
    decoder = SSEDecoder(max_event_bytes=limit)
    events: list[Any] = []
    try:
        for chunk in chunks:
            events.extend(decoder.feed(chunk))
        events.extend(decoder.close())
    except SSEError as exc:
        return events, str(exc)
    return events, (decoder.last_event_id, decoder.retry)


_LIMITS = st.sampled_from([16, 64, 4096, 16 * 1024 * 1024])
_CUTS = st.lists(st.integers(0, 12_000), max_size=6)


@given(data=streams, cuts=_CUTS, limit=_LIMITS)
def test_ndjson_result_does_not_depend_on_chunking(
    data: bytes, cuts: list[int], limit: int
) -> None:
    whole = _ndjson([data], limit)
    split = _ndjson(_chunks(data, cuts), limit)
    bytewise = _ndjson([data[i : i + 1] for i in range(len(data))], limit)
    assert split == whole
    assert bytewise == whole


@given(data=streams, cuts=_CUTS, limit=_LIMITS)
def test_sse_result_does_not_depend_on_chunking(data: bytes, cuts: list[int], limit: int) -> None:
    whole = _sse([data], limit)
    assert _sse(_chunks(data, cuts), limit) == whole
    assert _sse([data[i : i + 1] for i in range(len(data))], limit) == whole


def test_ndjson_deep_line_decodes_alike_beside_a_long_integer() -> None:
    """A chunk with a 19-digit number once sent its other lines to the standard library."""
    deep = b"[" * 1020 + b"]" * 1020
    alone = _ndjson([deep + b"\n", b"1234567890123456789\n"], 1 << 24)
    together = _ndjson([deep + b"\n1234567890123456789\n"], 1 << 24)
    assert together[1] is None
    assert [_depth(v) for v in together[0]] == [_depth(v) for v in alone[0]] == [1020, 0]


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return depth

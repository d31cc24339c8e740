"""Tests for `ikproxy.codecs.ndjson`: every rule, every error, both JSON backends."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import itertools
import json
import math
import pickle
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikproxy.codecs import ndjson
from ikproxy.codecs.ndjson import (
    DEFAULT_MAX_LINE_BYTES,
    NDJSONDecoder,
    NDJSONError,
    aiter_values,
    encode_line,
    iter_values,
)
from ikproxy.errors import IkproxyError

# Hypothesis tests use the function-scoped `backend` fixture; it only sets a module switch,
# which is the same for every example.
fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["orjson", "json"], autouse=True)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test with orjson and with the standard library's json."""
    monkeypatch.setattr(ndjson, "_orjson", orjson if request.param == "orjson" else None)
    return str(request.param)


# -- Feeding helpers --------------------------------------------------------------------


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (any order, duplicates allowed: empty chunks)."""
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def random_chunks(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = [rng.randrange(len(data) + 1) for _ in range(rng.randrange(1, 12))] if data else []
    return split_at(data, cuts)


# Ways to deliver a byte string: whole, one byte at a time, and three seeded random splits.
WAYS: dict[str, Callable[[bytes], list[bytes]]] = {
    "whole": lambda data: [data],
    "bytewise": lambda data: [data[i : i + 1] for i in range(len(data))],
    "split1": lambda data: random_chunks(data, 1),
    "split2": lambda data: random_chunks(data, 2),
    "split3": lambda data: random_chunks(data, 3),
}


@pytest.fixture(params=list(WAYS))
def way(request: pytest.FixtureRequest) -> Callable[[bytes], list[bytes]]:
    return WAYS[request.param]


def decode_chunks(chunks: list[bytes], **kwargs: Any) -> list[Any]:
    decoder = NDJSONDecoder(**kwargs)
    values = []
    for chunk in chunks:
        values += decoder.feed(chunk)
    return values + decoder.close()


def decode_error(chunks: list[bytes], **kwargs: Any) -> NDJSONError:
    """Feed `chunks` and return the NDJSONError raised (by feed or close)."""
    with pytest.raises(NDJSONError) as info:
        decode_chunks(chunks, **kwargs)
    return info.value


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down, and -0.0 told apart from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- Strategies -------------------------------------------------------------------------

tricky_text = st.text(
    st.one_of(
        st.characters(codec="utf-8"),  # any code point but surrogates
        st.sampled_from(["\x00", "\r", "\n", "\u2028", "\u2029", "\ufeff", "\U0001f600", "\\"]),
    )
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    tricky_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(tricky_text, children, max_size=5),
    ),
    max_leaves=20,
)


# -- Round trips ------------------------------------------------------------------------


@fixture_ok
@given(values=st.lists(json_values, max_size=8), data=st.data())
def test_any_json_values_round_trip_under_any_chunking(values: list[Any], data: Any) -> None:
    stream = b"".join(encode_line(value) for value in values)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label="cuts")
    for chunks in (
        [stream],
        [stream[i : i + 1] for i in range(len(stream))],
        split_at(stream, cuts),
    ):
        decoded = decode_chunks(chunks)
        assert same(decoded, values), (chunks, decoded)


@fixture_ok
@given(value=json_values)
def test_encode_line_is_one_compact_line(value: Any, backend: str) -> None:
    line = encode_line(value)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b"\r" not in line  # CR is escaped too, so no reader can mistake it for a line end
    line.decode("utf-8")  # strict UTF-8
    if backend == "json":
        compact = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        assert line == (compact + "\n").encode()


def has_tiny_float(value: Any) -> bool:
    if isinstance(value, float):
        return 0 < abs(value) < 1e-4
    if isinstance(value, list):
        return any(has_tiny_float(item) for item in value)
    if isinstance(value, dict):
        return any(has_tiny_float(item) for item in value.values())
    return False


@given(value=json_values)
def test_both_backends_write_the_same_bytes(value: Any) -> None:
    ndjson._orjson = orjson
    fast = encode_line(value)
    ndjson._orjson = None
    slow = encode_line(value)
    assert same(json.loads(fast), json.loads(slow))
    if not has_tiny_float(value):
        assert fast == slow


@pytest.mark.parametrize(
    ("value", "orjson_line", "json_line"),
    [
        (1e-7, b"1e-7\n", b"1e-07\n"),
        (1e-5, b"0.00001\n", b"1e-05\n"),
        (-5e-324, b"-5e-324\n", b"-5e-324\n"),
    ],
)
def test_the_one_documented_difference_is_the_spelling_of_tiny_floats(
    value: float, orjson_line: bytes, json_line: bytes
) -> None:
    ndjson._orjson = orjson
    assert encode_line(value) == orjson_line
    ndjson._orjson = None
    assert encode_line(value) == json_line


JSONISH_PIECES = [
    *rb'{ } [ ] , : " \ u d800 dc00 ude00 0 1 - . e + 9999999999999999999 true null NaN a'.split(),
    *[b" ", b"\t", b"\r", b"\n", b"\xef\xbb\xbf", b"\xc3\xa9", b"\xff", b"\xed\xa0\x80", b"\x00"],
]
jsonish = st.lists(st.sampled_from(JSONISH_PIECES), max_size=30).map(b"".join)


@given(data=jsonish)
def test_both_backends_agree_on_arbitrary_input(data: bytes) -> None:
    outcomes: list[tuple[str, Any]] = []
    for module in (orjson, None):
        ndjson._orjson = module
        try:
            outcomes.append(("ok", decode_chunks([data])))
        except NDJSONError as exc:
            outcomes.append(("error", (str(exc), exc.line, exc.values)))
    assert outcomes[0][0] == outcomes[1][0]
    if outcomes[0][0] == "ok":
        assert same(outcomes[0][1], outcomes[1][1])
    else:
        assert outcomes[0] == outcomes[1]


# -- Decoding rules, each fed whole, byte by byte and in random splits ------------------


def test_lf_ends_a_line(way: Callable[[bytes], list[bytes]]) -> None:
    assert decode_chunks(way(b'{"a":1}\n[2]\n"three"\n')) == [{"a": 1}, [2], "three"]


def test_crlf_ends_a_line(way: Callable[[bytes], list[bytes]]) -> None:
    assert decode_chunks(way(b'{"a":1}\r\n[2]\r\n3\n')) == [{"a": 1}, [2], 3]


def test_blank_lines_are_skipped(way: Callable[[bytes], list[bytes]]) -> None:
    assert decode_chunks(way(b"\n\n1\n\r\n\n2\n\n")) == [1, 2]


def test_whitespace_only_lines_are_skipped(way: Callable[[bytes], list[bytes]]) -> None:
    assert decode_chunks(way(b" \n1\n\t \r\n  2  \n \t\n")) == [1, 2]


def test_a_final_line_without_lf_comes_out_of_close(way: Callable[[bytes], list[bytes]]) -> None:
    decoder = NDJSONDecoder()
    fed = []
    for chunk in way(b"1\n[2, 3]"):
        fed += decoder.feed(chunk)
    assert fed == [1]
    assert decoder.close() == [[2, 3]]


def test_a_final_crlf_line_and_a_final_blank_line(way: Callable[[bytes], list[bytes]]) -> None:
    assert decode_chunks(way(b"1\r\n2\r")) == [1, 2]  # the last CR is whitespace
    assert decode_chunks(way(b"1\n  ")) == [1]


def test_a_cr_inside_a_line_is_json_whitespace(way: Callable[[bytes], list[bytes]]) -> None:
    assert decode_chunks(way(b"[1,\r2]\n{\r}\n")) == [[1, 2], {}]


def test_each_value_comes_out_of_the_feed_that_delivers_its_lf(
    way: Callable[[bytes], list[bytes]],
) -> None:
    data = b'1\n"two"\n\n[3]\r\n{"four":4}\n'
    chunks = way(data)
    decoder = NDJSONDecoder()
    seen: list[tuple[int, Any]] = []
    for index, chunk in enumerate(chunks):
        seen += [(index, value) for value in decoder.feed(chunk)]
    assert decoder.close() == []
    ends = [1, 7, 13, 24]  # offsets of the LFs that end a non-blank line
    assert [data[i] for i in ends] == [10] * 4
    bounds = [sum(len(c) for c in chunks[: k + 1]) for k in range(len(chunks))]
    expected_index = [next(k for k, end in enumerate(bounds) if end > lf) for lf in ends]
    assert seen == list(zip(expected_index, [1, "two", [3], {"four": 4}], strict=True))


def test_nothing_comes_out_before_the_lf() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a": ') == []
    assert decoder.feed(b"1}") == []
    assert decoder.feed(b"\r") == []
    assert decoder.feed(b"\n") == [{"a": 1}]
    assert decoder.feed(b"") == []
    assert decoder.close() == []


def test_a_multibyte_character_split_across_chunks() -> None:
    line = '["é", "€", "😀", "\u2028"]\n'.encode()
    for cut in range(len(line) + 1):
        for cut2 in range(cut, len(line) + 1):
            chunks = [line[:cut], line[cut:cut2], line[cut2:]]
            assert decode_chunks(chunks) == [["é", "€", "😀", "\u2028"]]


def test_surrogate_pair_escapes_decode_to_one_character(
    way: Callable[[bytes], list[bytes]],
) -> None:
    data = b'"\\ud83d\\ude00"\n"\\uD83D\\uDE00"\n"\\\\ud800"\n'
    assert decode_chunks(way(data)) == ["\U0001f600", "\U0001f600", "\\ud800"]


def test_integers_beyond_64_bits_decode_exactly(way: Callable[[bytes], list[bytes]]) -> None:
    big = [2**64, -(2**63) - 1, 10**30, 2**64 - 1, -(2**63), 12345678901234567890]
    data = (
        b"".join(encode_line(n) for n in big) + b'{"id": 340282366920938463463374607431768211456}'
    )
    values = decode_chunks(way(data))
    assert same(values, [*big, {"id": 2**128}])


def test_a_number_beyond_float_range_decodes_to_infinity_as_in_json() -> None:
    assert decode_chunks([b"1e400\n-1e400\n"]) == [math.inf, -math.inf]


def test_empty_stream() -> None:
    assert decode_chunks([]) == []
    assert decode_chunks([b""]) == []


def test_feed_accepts_bytearray_and_memoryview() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(bytearray(b"1\n2")) == [1]
    assert decoder.feed(memoryview(b"\n")) == [2]


def test_a_line_of_exactly_max_line_bytes_is_accepted(way: Callable[[bytes], list[bytes]]) -> None:
    line = b'"' + b"x" * 8 + b'"'  # 10 bytes
    assert (
        decode_chunks(way(line + b"\n" + line + b"\r\n" + line), max_line_bytes=10) == ["x" * 8] * 3
    )


def test_default_max_line_bytes() -> None:
    assert DEFAULT_MAX_LINE_BYTES == 16 * 1024 * 1024
    assert NDJSONDecoder().max_line_bytes == DEFAULT_MAX_LINE_BYTES
    line = b'"' + b"x" * (DEFAULT_MAX_LINE_BYTES - 2) + b'"\n'
    assert decode_chunks([line]) == ["x" * (DEFAULT_MAX_LINE_BYTES - 2)]
    error = decode_error([b"x" + line])
    assert str(error) == f"line 1: line exceeds {DEFAULT_MAX_LINE_BYTES} bytes"


# -- Decoding errors: exact message and line number -------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\n\nnope\n", "line 3: invalid JSON: Expecting value at column 1"),
        (b"1\n\r\n\n[1,,2]\n", "line 4: invalid JSON: Expecting value at column 4"),
        (b"1 2\n", "line 1: invalid JSON: Extra data at column 3"),
        (b'{"a" 1}\n', "line 1: invalid JSON: Expecting ':' delimiter at column 6"),
        (b'"abc\n', "line 1: invalid JSON: Unterminated string starting at column 1"),
        (b'"a\x01b"\n', "line 1: invalid JSON: Invalid control character at column 3"),
        (b'"a\rb"\n', "line 1: invalid JSON: Invalid control character at column 3"),
        (b"1\r2\n", "line 1: invalid JSON: Extra data at column 3"),
        (b"1\n2\n\x0c3\n", "line 3: invalid JSON: Expecting value at column 1"),
        (b"1\n\xc2\xa0\n", "line 2: invalid JSON: Expecting value at column 1"),
        (
            b'"\\x"\n',
            "line 1: invalid JSON: Invalid \\escape at column 2",
        ),
        (b"tru\n", "line 1: invalid JSON: Expecting value at column 1"),
        (b"[1,\n2]\n", "line 1: invalid JSON: Expecting value at column 4"),
        (b"NaN\n", "line 1: invalid JSON: NaN is not allowed"),
        (b"[1, Infinity]\n", "line 1: invalid JSON: Infinity is not allowed"),
        (b'{"a": -Infinity}\n', "line 1: invalid JSON: -Infinity is not allowed"),
        (b"1\n\n2\nnull\nNaN", "line 5: invalid JSON: NaN is not allowed"),
        (b"1\n" + b"[" * 100_000, "line 2: invalid JSON: nested too deeply"),
        (
            b"1" * 4301,
            "line 1: invalid JSON: integer has more than 4300 digits"
            " (the limit set by sys.set_int_max_str_digits)",
        ),
    ],
)
def test_invalid_json(data: bytes, message: str, way: Callable[[bytes], list[bytes]]) -> None:
    error = decode_error(way(data))
    assert str(error) == message
    assert error.line == int(message.split(":")[0].removeprefix("line "))
    assert error.reason == message.split(": ", 1)[1]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'1\n"ab\xffc"\n', "line 2: invalid UTF-8 at byte 4"),
        (b'"\xed\xa0\x80"\n', "line 1: invalid UTF-8 at byte 2"),  # an encoded surrogate
        (b'"\xc0\xaf"\n', "line 1: invalid UTF-8 at byte 2"),  # an overlong encoding
        (b'"\xf4\x90\x80\x80"\n', "line 1: invalid UTF-8 at byte 2"),  # beyond U+10FFFF
        (b'"\xe2\x82"\n', "line 1: invalid UTF-8 at byte 2"),  # truncated
        (b'\n\n"caf\xc3"', "line 3: invalid UTF-8 at byte 5"),  # truncated at the very end
        (b"\xff\xfe1\x00\n", "line 1: invalid UTF-8 at byte 1"),  # UTF-16
    ],
)
def test_invalid_utf8(data: bytes, message: str, way: Callable[[bytes], list[bytes]]) -> None:
    error = decode_error(way(data))
    assert str(error) == message


@pytest.mark.parametrize(
    ("data", "line"), [(b"\xef\xbb\xbf{}\n", 1), (b"\xef\xbb\xbf", 1), (b"1\n\xef\xbb\xbf2\n", 2)]
)
def test_a_byte_order_mark_is_rejected(
    data: bytes, line: int, way: Callable[[bytes], list[bytes]]
) -> None:
    error = decode_error(way(data))
    assert str(error) == f"line {line}: unexpected byte order mark (NDJSON is UTF-8 without BOM)"
    assert error.line == line


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'"\\ud800"\n', "line 1: lone surrogate \\ud800 in string"),
        (b'1\n"\\udc00"\n', "line 2: lone surrogate \\udc00 in string"),
        (b'"\\ud800x"\n', "line 1: lone surrogate \\ud800 in string"),
        (b'["ok", "\\uDBFF"]\n', "line 1: lone surrogate \\udbff in string"),
        (b'"\\ud800\\ud800"\n', "line 1: lone surrogate \\ud800 in string"),
        (b'"\\ude00\\ud83d"\n', "line 1: lone surrogate \\ude00 in string"),
        (b'{"\\udfff": 1}\n', "line 1: lone surrogate \\udfff in string"),
        (b'"\\\\\\ud800"\n', "line 1: lone surrogate \\ud800 in string"),
        (b'{"a": "\\ud800", "a": "x"}\n', "line 1: lone surrogate \\ud800 in string"),
        (b'"\\ud83d\\ude00\\ud83d"', "line 1: lone surrogate \\ud83d in string"),
    ],
)
def test_a_lone_surrogate_escape_is_rejected(
    data: bytes, message: str, way: Callable[[bytes], list[bytes]]
) -> None:
    assert str(decode_error(way(data))) == message


def test_an_over_long_line_is_rejected(way: Callable[[bytes], list[bytes]]) -> None:
    error = decode_error(way(b"1\n" + b" " * 11 + b"\n"), max_line_bytes=10)
    assert str(error) == "line 2: line exceeds 10 bytes"
    assert error.line == 2


@pytest.mark.parametrize(
    "data",
    [
        b"1234567890\rx\n",  # a CR not followed by LF belongs to the line
        b"1234567890\r\r\n",
        b"1234567890\r",  # at close, the last CR belongs to the line too
        b"12345678901",
        b"\n\n12345678901\n",
    ],
)
def test_a_cr_counts_unless_it_is_part_of_crlf(
    data: bytes, way: Callable[[bytes], list[bytes]]
) -> None:
    error = decode_error(way(data), max_line_bytes=10)
    assert error.reason == "line exceeds 10 bytes"


def test_an_over_long_line_is_detected_before_its_end_arrives() -> None:
    limit = 1024 * 1024
    piece = 4096
    decoder = NDJSONDecoder(max_line_bytes=limit)
    assert decoder.feed(b'1\n"') == [1]
    line_bytes = 1

    def feed_a_2mib_line() -> None:
        nonlocal line_bytes
        for _ in range(2 * limit // piece):
            line_bytes += piece
            decoder.feed(b"x" * piece)

    with pytest.raises(NDJSONError) as info:
        feed_a_2mib_line()
    # It fails with the piece that takes the line past the limit, long before its end.
    assert limit < line_bytes <= limit + piece
    assert str(info.value) == "line 2: line exceeds 1048576 bytes"


def test_an_over_long_line_is_detected_inside_one_big_chunk() -> None:
    decoder = NDJSONDecoder(max_line_bytes=10)
    with pytest.raises(NDJSONError) as info:
        decoder.feed(b"1\n2\n" + b"3" * 11 + b"\n4\n")
    assert str(info.value) == "line 3: line exceeds 10 bytes"
    assert info.value.values == [1, 2]


def test_the_first_error_in_a_chunk_wins() -> None:
    error = decode_error([b"1\nx\n" + b"2" * 20 + b"\n"], max_line_bytes=10)
    assert str(error) == "line 2: invalid JSON: Expecting value at column 1"
    error = decode_error([b"1\n" + b"2" * 20 + b"\nx\n"], max_line_bytes=10)
    assert str(error) == "line 2: line exceeds 10 bytes"


def test_values_before_the_bad_line_travel_with_the_error() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b"0\n") == [0]
    with pytest.raises(NDJSONError) as info:
        decoder.feed(b"1\n\n2\nnope\n3\n")
    assert info.value.values == [1, 2]
    assert info.value.line == 5


def test_a_decoder_that_raised_is_dead() -> None:
    decoder = NDJSONDecoder()
    with pytest.raises(NDJSONError) as first:
        decoder.feed(b"1\nnope\n")
    calls: list[Callable[[], object]] = [
        lambda: decoder.feed(b"2\n"),
        decoder.close,
        lambda: decoder.feed(b""),
    ]
    for call in calls:
        with pytest.raises(NDJSONError) as again:
            call()
        assert (
            str(again.value)
            == str(first.value)
            == "line 2: invalid JSON: Expecting value at column 1"
        )
        assert again.value.line == 2
        assert again.value.values == []


def test_feed_after_close_is_a_usage_error() -> None:
    decoder = NDJSONDecoder()
    assert decoder.close() == []
    assert decoder.close() == []
    with pytest.raises(RuntimeError, match=r"^feed\(\) called after close\(\)$"):
        decoder.feed(b"1\n")


def test_feed_rejects_text() -> None:
    with pytest.raises(TypeError, match=r"^feed\(\) takes bytes, not str$"):
        NDJSONDecoder().feed("1\n")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, "max_line_bytes must be at least 1, not 0"),
        (-5, ValueError, "max_line_bytes must be at least 1, not -5"),
        ("10", TypeError, "max_line_bytes must be an int, not str"),
        (True, TypeError, "max_line_bytes must be an int, not bool"),
        (10.0, TypeError, "max_line_bytes must be an int, not float"),
    ],
)
def test_max_line_bytes_is_checked(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        NDJSONDecoder(max_line_bytes=value)
    assert str(info.value) == message


def test_ndjson_error_is_a_value_error_and_an_ikproxy_error() -> None:
    error = NDJSONError("invalid UTF-8 at byte 5", 2, [1])
    assert isinstance(error, ValueError)
    assert isinstance(error, IkproxyError)
    assert (str(error), error.line, error.reason, error.values) == (
        "line 2: invalid UTF-8 at byte 5",
        2,
        "invalid UTF-8 at byte 5",
        [1],
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.line, copy.reason, copy.values) == (
        str(error),
        2,
        error.reason,
        [1],
    )


# -- Iterating helpers ------------------------------------------------------------------


def test_iter_values() -> None:
    assert list(iter_values([b"1\n[", b"2]\n", b"3"])) == [1, [2], 3]


def test_iter_values_yields_what_came_before_an_error() -> None:
    seen = []

    def consume() -> None:
        for value in iter_values(iter([b"1\n", b"2\n3\n", b"nope\n4\n"]), max_line_bytes=100):
            seen.append(value)

    with pytest.raises(NDJSONError) as info:
        consume()
    assert seen == [1, 2, 3]
    assert str(info.value) == "line 4: invalid JSON: Expecting value at column 1"


def test_iter_values_passes_max_line_bytes() -> None:
    with pytest.raises(NDJSONError, match=r"^line 1: line exceeds 3 bytes$"):
        list(iter_values([b"1234"], max_line_bytes=3))


async def _agen(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.mark.anyio
async def test_aiter_values() -> None:
    assert [value async for value in aiter_values(_agen([b"1\n[", b"2]\r\n", b"3"]))] == [1, [2], 3]


@pytest.mark.anyio
async def test_aiter_values_yields_what_came_before_an_error() -> None:
    seen = []

    async def consume() -> None:
        async for value in aiter_values(_agen([b"1\n", b"2\n\xef\xbb\xbf3\n"]), max_line_bytes=9):
            seen.append(value)

    with pytest.raises(NDJSONError) as info:
        await consume()
    assert seen == [1, 2]
    assert str(info.value) == "line 3: unexpected byte order mark (NDJSON is UTF-8 without BOM)"


# -- Encoding ---------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    PAIR = (1, 2.5)
    BAD = float("nan")


class Table(enum.Enum):
    BAD_KEY = {(1, 2): "a tuple key"}  # noqa: RUF012 - an enum member, not a default


class Level(enum.IntEnum):
    HIGH = 3


class Size(float):
    pass


class Name(str):
    pass


class Point(collections.namedtuple("Point", "x y")):
    pass


@dataclasses.dataclass
class Box:
    width: int


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ({"a": [1, 2.5, None, True, False]}, b'{"a":[1,2.5,null,true,false]}\n'),
        ({"é": "😀"}, b'{"\xc3\xa9":"\xf0\x9f\x98\x80"}\n'),
        ('\x00\x1f\r\n\t"\\/', b'"\\u0000\\u001f\\r\\n\\t\\"\\\\/"\n'),
        ("\u2028\u2029\x7f\ufeff", '"\u2028\u2029\x7f\ufeff"\n'.encode()),
        (2**64, b"18446744073709551616\n"),
        (-(2**63) - 1, b"-9223372036854775809\n"),
        ([2**64 - 1, -(2**63)], b"[18446744073709551615,-9223372036854775808]\n"),
        ({"n": 10**40}, b'{"n":10000000000000000000000000000000000000000}\n'),
        (-0.0, b"-0.0\n"),
        (1.0, b"1.0\n"),
        (1e16, b"1e+16\n"),
        (0.1, b"0.1\n"),
        (123456789.123, b"123456789.123\n"),
        ((1, (2,)), b"[1,[2]]\n"),
        (
            {1: "a", 2.5: "b", False: "c", None: "d"},
            b'{"1":"a","2.5":"b","false":"c","null":"d"}\n',
        ),
        (collections.OrderedDict(b=1, a=2), b'{"b":1,"a":2}\n'),
        (Point(1, 2), b"[1,2]\n"),
        (Size(1.5), b"1.5\n"),
        (Name("x"), b'"x"\n'),
        (Level.HIGH, b"3\n"),
        ({"c": Color.RED, "p": Color.PAIR}, b'{"c":"red","p":[1,2.5]}\n'),
        (uuid.UUID(int=1), b'"00000000-0000-0000-0000-000000000001"\n'),
        ([[[[[[[[[[[]]]]]]]]]]] * 2, b"[[[[[[[[[[[]]]]]]]]]],[[[[[[[[[[]]]]]]]]]]]\n"),
        ({"label": None, "x": 1.5}, b'{"label":null,"x":1.5}\n'),
        (None, b"null\n"),
    ],
)
def test_encode_line(value: Any, line: bytes) -> None:
    assert encode_line(value) == line


def test_encode_deep_nesting_beyond_orjsons_limit() -> None:
    value: Any = 1
    for _ in range(300):
        value = [value]
    assert encode_line(value) == b"[" * 300 + b"1" + b"]" * 300 + b"\n"


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        [1, {"x": math.nan}],
        {"label": None, "x": math.inf},  # null already in the output
        [None, [None, (None, -math.inf)]],
        {"sizes": [Size("nan")]},
        Color.BAD,
        {"c": [Color.BAD], "d": None, "l": "null"},
        {1.5: math.nan},
    ],
)
def test_encode_rejects_nan_and_infinity(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^NaN and Infinity are not valid JSON$"):
        encode_line(value)


@pytest.mark.parametrize(
    ("value", "surrogate"),
    [("\ud800", "\\ud800"), (["ok", {"k": "a\udfffb"}], "\\udfff"), ({"\udbff": 1}, "\\udbff")],
)
def test_encode_rejects_lone_surrogates(value: Any, surrogate: str) -> None:
    with pytest.raises(ValueError, match=r"^lone surrogate") as info:
        encode_line(value)
    assert str(info.value) == f"lone surrogate {surrogate} in string"
    assert not isinstance(info.value, UnicodeError)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (b"bytes", "bytes"),
        ({1, 2}, "set"),
        ([1, object()], "object"),
        ({"when": datetime.datetime(2024, 1, 1)}, "datetime.datetime"),
        (datetime.date(2024, 1, 1), "datetime.date"),
        (decimal.Decimal("1.5"), "decimal.Decimal"),
        (Box(1), f"{__name__}.Box"),
        (1 + 2j, "complex"),
    ],
)
def test_encode_rejects_other_types(value: Any, type_name: str) -> None:
    with pytest.raises(TypeError) as info:
        encode_line(value)
    assert str(info.value) == f"cannot encode object of type {type_name} as JSON"


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({(1, 2): 1}, "tuple"),
        ([{"a": {"b": {b"k": 1}}}], "bytes"),
        ({"ok": 1, Color.RED: 2}, f"{__name__}.Color"),
        ([Table.BAD_KEY], "tuple"),
    ],
)
def test_encode_rejects_other_key_types(value: Any, type_name: str) -> None:
    with pytest.raises(TypeError) as info:
        encode_line(value)
    assert str(info.value) == (
        f"cannot encode dict key of type {type_name} as JSON"
        " (keys must be str, int, float, bool or None)"
    )


def test_encode_rejects_nesting_deeper_than_the_recursion_limit() -> None:
    value: Any = None
    for _ in range(100_000):
        value = [value]
    with pytest.raises(ValueError, match=r"^nested too deeply$"):
        encode_line(value)


def test_encode_rejects_integers_python_cannot_print() -> None:
    with pytest.raises(ValueError, match=r"^integer has more than 4300 digits") as info:
        encode_line([10**4300])
    assert str(info.value) == (
        "integer has more than 4300 digits (the limit set by sys.set_int_max_str_digits)"
    )


def test_encode_rejects_circular_references() -> None:
    items: list[Any] = [1]
    items.append({"again": items})
    with pytest.raises(ValueError, match=r"^circular reference: a list or dict contains itself$"):
        encode_line(items)


def test_the_backend_switch_is_read_when_called(backend: str) -> None:
    # The "orjson" run really uses orjson: only it spells 1e-7 this way.
    assert (encode_line(1e-7) == b"1e-7\n") is (backend == "orjson")


def chunks_of(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def test_a_long_stream_in_64k_chunks() -> None:
    objects = [
        {"event": "progress", "seq": i, "progress": i / 5000, "eta": [i, 2 * i], "ok": None}
        for i in range(5000)
    ]
    data = b"".join(encode_line(obj) for obj in objects)
    assert list(iter_values(chunks_of(data, 65536))) == objects

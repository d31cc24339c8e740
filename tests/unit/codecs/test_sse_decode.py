"""`SSEDecoder`: the WHATWG "Parsing an event stream" rules, one test each, fed whole, byte
by byte and in random splits; the spec's own examples; every error; and a property test
against a plain transcription of the spec."""

from __future__ import annotations

import itertools
import pickle
import random
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikproxy.codecs.sse import (
    DEFAULT_MAX_EVENT_BYTES,
    ServerSentEvent,
    SSEDecoder,
    SSEError,
    aiter_events,
    iter_events,
)
from ikproxy.errors import IkproxyError

BOM = b"\xef\xbb\xbf"


def E(
    data: str = "", event: str = "message", id: str | None = None, retry: int | None = None
) -> ServerSentEvent:
    """An event as the decoder makes it: its type is "message" unless named."""
    return ServerSentEvent(data, event, id, retry)


def too_big(limit: int) -> str:
    return f"event exceeds max_event_bytes ({limit} bytes)"


# -- Feeding a stream three ways --------------------------------------------------------


@dataclass
class Outcome:
    """What a decoder made of a whole stream."""

    events: list[ServerSentEvent]
    last_event_id: str | None
    retry: int | None
    error: str | None = None


def run(chunks: Iterable[bytes], **kwargs: int) -> Outcome:
    """Feed `chunks` then close; an SSEError ends the run (its events are kept)."""
    decoder = SSEDecoder(**kwargs)
    events: list[ServerSentEvent] = []
    try:
        for chunk in chunks:
            events += decoder.feed(chunk)
        events += decoder.close()
    except SSEError as exc:
        return Outcome(events + exc.events, decoder.last_event_id, decoder.retry, str(exc))
    return Outcome(events, decoder.last_event_id, decoder.retry)


def random_split(stream: bytes, rng: random.Random) -> list[bytes]:
    """`stream` cut at random places, with an empty chunk now and then."""
    cuts = sorted(rng.sample(range(len(stream) + 1), rng.randint(0, min(len(stream), 12))))
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


def splits(stream: bytes, mode: str) -> list[list[bytes]]:
    if mode == "whole":
        return [[stream]]
    if mode == "bytewise":
        return [[stream[i : i + 1] for i in range(len(stream))]]
    rng = random.Random(stream)
    return [random_split(stream, rng) for _ in range(25)]


Decode = Callable[..., Outcome]


@pytest.fixture(params=["whole", "bytewise", "random"])
def decode(request: pytest.FixtureRequest) -> Decode:
    """Decode a stream fed in one way; random splits must all agree."""

    def decode(stream: bytes, **kwargs: int) -> Outcome:
        outcomes = [run(chunks, **kwargs) for chunks in splits(stream, request.param)]
        for outcome in outcomes[1:]:
            assert outcome == outcomes[0]
        return outcomes[0]

    return decode


# -- One test per rule ------------------------------------------------------------------


def test_blank_line_dispatches_a_message(decode: Decode) -> None:
    assert decode(b"data: hello\n\n").events == [E("hello", "message")]


def test_event_field_sets_the_type(decode: Decode) -> None:
    assert decode(b"event: progress\ndata: 1\n\n").events == [E("1", "progress")]


def test_type_resets_after_each_dispatch(decode: Decode) -> None:
    stream = b"event: a\ndata: 1\n\ndata: 2\n\n"
    assert decode(stream).events == [E("1", "a"), E("2", "message")]


def test_empty_event_field_means_message(decode: Decode) -> None:
    assert decode(b"event:\ndata: 1\n\n").events == [E("1", "message")]


def test_event_without_data_is_not_dispatched_but_resets_the_type(decode: Decode) -> None:
    stream = b"event: a\n\ndata: 1\n\n"
    assert decode(stream).events == [E("1", "message")]


def test_data_lines_are_joined_with_lf(decode: Decode) -> None:
    assert decode(b"data: a\ndata: b\ndata: c\n\n").events == [E("a\nb\nc")]


def test_empty_data_lines_count(decode: Decode) -> None:
    assert decode(b"data:\ndata:\n\n").events == [E("\n")]


def test_lf_cr_and_crlf_all_end_lines(decode: Decode) -> None:
    stream = b"data: a\rdata: b\r\ndata: c\n\r\ndata: d\r\r"
    assert decode(stream).events == [E("a\nb\nc"), E("d")]


def test_cr_then_crlf_is_two_line_ends(decode: Decode) -> None:
    assert decode(b"data: a\r\r\n").events == [E("a")]
    assert decode(b"data: a\r\r\ndata: b\n\n").events == [E("a"), E("b")]


def test_comment_lines_are_ignored(decode: Decode) -> None:
    stream = b": hello\ndata: 1\n:data: 2\n:\n\n"
    assert decode(stream).events == [E("1")]


def test_comment_alone_dispatches_nothing(decode: Decode) -> None:
    assert decode(b": keepalive\n\n: again\n").events == []


def test_field_without_colon_has_empty_value(decode: Decode) -> None:
    assert decode(b"data\n\n").events == [E("")]
    assert decode(b"event\ndata: x\n\n").events == [E("x", "message")]


def test_one_leading_space_is_removed(decode: Decode) -> None:
    stream = b"data:a\n\ndata: a\n\ndata:  a\n\ndata:\ta\n\n"
    assert decode(stream).events == [E("a"), E("a"), E(" a"), E("\ta")]


def test_only_the_first_colon_splits(decode: Decode) -> None:
    assert decode(b'data: {"a": 1}: x\n\n').events == [E('{"a": 1}: x')]
    assert decode(b"event: a:b\ndata\n\n").events == [E("", "a:b")]


def test_unknown_fields_are_ignored(decode: Decode) -> None:
    stream = b"foo: bar\ndata: 1\nDATA: 2\nData: 3\n data: 4\ndata : 5\n\n"
    assert decode(stream).events == [E("1")]


def test_id_sets_the_last_event_id(decode: Decode) -> None:
    outcome = decode(b"id: 7\ndata: a\n\n")
    assert outcome.events == [E("a", id="7")]
    assert outcome.last_event_id == "7"


def test_id_stays_in_force_for_later_events(decode: Decode) -> None:
    stream = b"id: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\n"
    assert decode(stream).events == [E("a", id="7"), E("b", id="7"), E("c", id="8")]


def test_empty_id_resets_the_last_event_id(decode: Decode) -> None:
    stream = b"id: 7\ndata: a\n\nid\ndata: b\n\nid:\ndata: c\n\n"
    outcome = decode(stream)
    assert outcome.events == [E("a", id="7"), E("b", id=""), E("c", id="")]
    assert outcome.last_event_id == ""


def test_id_is_none_until_the_stream_sends_one(decode: Decode) -> None:
    outcome = decode(b"data: a\n\n")
    assert outcome.events == [E("a", id=None)]
    assert outcome.last_event_id is None


def test_id_with_nul_is_ignored(decode: Decode) -> None:
    stream = b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n"
    outcome = decode(stream)
    assert outcome.events == [E("a", id="1"), E("b", id="1")]
    assert outcome.last_event_id == "1"


def test_id_without_data_still_updates_the_last_event_id(decode: Decode) -> None:
    outcome = decode(b"id: 9\n\n")
    assert outcome.events == []
    assert outcome.last_event_id == "9"


def test_id_of_an_unfinished_event_is_not_applied(decode: Decode) -> None:
    outcome = decode(b"id: 1\ndata: a\n\nid: 2\ndata: b\n")
    assert outcome.events == [E("a", id="1")]
    assert outcome.last_event_id == "1"


def test_retry_sets_the_reconnection_time(decode: Decode) -> None:
    outcome = decode(b"retry: 3000\ndata: a\n\ndata: b\n\n")
    assert outcome.events == [E("a", retry=3000), E("b", retry=3000)]
    assert outcome.retry == 3000


def test_retry_applies_at_once_even_without_a_blank_line(decode: Decode) -> None:
    assert decode(b"retry: 5\n").retry == 5


def test_retry_must_be_ascii_digits(decode: Decode) -> None:
    for value in [b"", b" 5", b"5 ", b"+5", b"-5", b"5.0", b"1e3", b"5_000", "\u0665".encode()]:
        assert decode(b"retry: 10\nretry: " + value + b"\n").retry == 10
    assert decode(b"retry:0\n").retry == 0
    assert decode(b"retry: 007\n").retry == 7


def test_retry_too_long_for_int_is_ignored(decode: Decode) -> None:
    assert decode(b"retry: 10\nretry: " + b"9" * 5000 + b"\n").retry == 10
    assert decode(b"retry: " + b"0" * 5000 + b"42\n").retry == 42


def test_retry_is_none_until_the_stream_sends_one(decode: Decode) -> None:
    outcome = decode(b"data: a\n\n")
    assert outcome.events == [E("a", retry=None)]
    assert outcome.retry is None


def test_field_names_are_case_sensitive(decode: Decode) -> None:
    stream = b"Event: x\nID: 1\nRetry: 5\ndata: a\n\n"
    assert decode(stream) == Outcome([E("a")], None, None)


def test_unfinished_event_at_the_end_is_discarded(decode: Decode) -> None:
    assert decode(b"data: a\n\ndata: b\n").events == [E("a")]
    assert decode(b"data: a\n\ndata: b").events == [E("a")]


def test_leading_bom_is_dropped(decode: Decode) -> None:
    assert decode(BOM + b"data: a\n\n").events == [E("a")]


def test_only_one_bom_is_dropped(decode: Decode) -> None:
    # The second BOM is part of the first field name, so that line is ignored.
    assert decode(BOM + BOM + b"data: a\n\ndata: b\n\n").events == [E("b")]


def test_bom_later_in_the_stream_is_kept(decode: Decode) -> None:
    stream = b"data: a\n\n" + BOM + b"data: b\n\ndata: " + BOM + b"\n\n"
    assert decode(stream).events == [E("a"), E("\ufeff")]


def test_bom_prefix_alone_is_not_a_bom(decode: Decode) -> None:
    assert decode(b"\xef\xbbdata: a\n\ndata: b\n\n").events == [E("b")]
    assert decode(b"\xef\xbb").events == []


def test_utf8_is_decoded(decode: Decode) -> None:
    text = "é € 𝄞 e\u0301 日本"
    stream = f"event: ü\nid: ß\ndata: {text}\n\n".encode()
    assert decode(stream).events == [E(text, "ü", "ß")]


def test_invalid_utf8_is_replaced(decode: Decode) -> None:
    stream = b"data: a\xffb\xc3\n\ndata: \xe2\x82\n\ndata: \xed\xa0\x80\n\n"
    assert decode(stream).events == [E("a\ufffdb\ufffd"), E("\ufffd"), E("\ufffd" * 3)]


def test_invalid_utf8_in_a_name_does_not_match(decode: Decode) -> None:
    assert decode(b"dat\xe1: x\ndata: a\n\n").events == [E("a")]


def test_nul_in_data_is_kept(decode: Decode) -> None:
    assert decode(b"data: a\x00b\n\n").events == [E("a\x00b")]


def test_blank_lines_without_an_event_do_nothing(decode: Decode) -> None:
    assert decode(b"\n\n\r\n\r\ndata: a\n\n\n\n").events == [E("a")]


LONG = ("x" * 1000 + "é") * 100  # 100 kB, with a 2-byte character every kB


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b"data:", [E(LONG + "\nz", id="0")]),
        (b"data: ", [E(LONG + "\nz", id="0")]),
        (b"event: ", [E("z", LONG, id="0")]),
        (b"id: ", [E("z", id=LONG)]),
        (b"retry: ", [E("z", id="0")]),
        (b": ", [E("z", id="0")]),
        (b"dat: ", [E("z", id="0")]),
        (b"data", [E("z", id="0")]),  # a 100 kB field name
        (b"da", [E("z", id="0")]),
    ],
)
def test_long_line_split_anywhere(prefix: bytes, expected: list[ServerSentEvent]) -> None:
    stream = b"id: 0\n" + prefix + LONG.encode() + b"\ndata: z\n\n"
    assert run([stream]).events == expected
    for first in range(6, 16):  # the first piece of the line holds 0 to 9 of its bytes
        chunks = [stream[:first]] + [stream[i : i + 999] for i in range(first, len(stream), 999)]
        assert run(chunks).events == expected


# -- When an event comes out ------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "counts"),
    [
        ([b"data: a\n", b"\n"], [0, 1]),
        ([b"data: a\n\n"], [1]),
        ([b"data: a\r", b"\r"], [0, 1]),  # the blank line is a lone CR ending the chunk
        ([b"data: a\r\r"], [1]),
        ([b"data: a\r\n\r", b"\n"], [1, 0]),
        ([b"data: a\r", b"\n", b"\r", b"\ndata: b\r\n\r\n"], [0, 0, 1, 1]),
        ([b"data: a\n\r", b"\r", b"\n"], [1, 0, 0]),
        ([b"data: a", b"\n", b"\n"], [0, 0, 1]),
        ([BOM + b"data: a\n\n"], [1]),
    ],
)
def test_event_comes_out_of_the_feed_with_its_blank_line(
    chunks: list[bytes], counts: list[int]
) -> None:
    decoder = SSEDecoder()
    assert [len(decoder.feed(chunk)) for chunk in chunks] == counts
    assert decoder.close() == []


def test_split_crlf_does_not_make_an_extra_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []  # one event, two data lines
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == [E("a\nb")]


def test_lf_after_a_cr_chunk_is_dropped_only_once() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []  # an empty chunk keeps the pending CR
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == [E("a")]


def test_state_survives_across_events() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"retry: 50\nid: x\ndata: a\n\n")
    assert (decoder.last_event_id, decoder.retry) == ("x", 50)
    assert decoder.feed(b"data: b\n\n") == [E("b", "message", "x", 50)]


# -- The examples of the spec (HTML, 9.2.6) ---------------------------------------------


def test_spec_example_stock_ticker(decode: Decode) -> None:
    stream = b"data: YHOO\ndata: +2\ndata: 10\n\n"
    assert decode(stream).events == [E("YHOO\n+2\n10")]


def test_spec_example_four_blocks(decode: Decode) -> None:
    stream = (
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n"
    )
    first, second = E("first event", id="1"), E("second event", id="")
    assert decode(stream).events == [first, second]  # the last block needs a blank line
    assert decode(stream + b"\n").events == [first, second, E(" third event", id="")]


def test_spec_example_empty_data(decode: Decode) -> None:
    assert decode(b"data\n\ndata\ndata\n\ndata:").events == [E(""), E("\n")]


def test_spec_example_space_after_colon(decode: Decode) -> None:
    assert decode(b"data:test\n\ndata: test\n\n").events == [E("test"), E("test")]


def test_spec_example_event_types(decode: Decode) -> None:
    stream = (
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n"
    )
    expected = [E("73857293", "add"), E("2153", "remove"), E("113411", "add")]
    assert decode(stream).events == expected


# -- Limits and errors ------------------------------------------------------------------


def test_event_of_exactly_the_limit_is_accepted(decode: Decode) -> None:
    # "data: " + 10 bytes + LF = 17 bytes; the blank line is not counted.
    outcome = decode(b"data: 0123456789\n\n" * 3, max_event_bytes=17)
    assert outcome.events == [E("0123456789")] * 3
    assert outcome.error is None


def test_event_over_the_limit_raises(decode: Decode) -> None:
    outcome = decode(b"data: a\n\ndata: 0123456789\n\ndata: b\n\n", max_event_bytes=16)
    assert outcome.events == [E("a")]
    assert outcome.error == too_big(16)


def test_limit_counts_every_line_of_the_event(decode: Decode) -> None:
    stream = b": 1234\nevent: e\nid: 1\ndata: x\n\n"  # 7 + 9 + 6 + 8 = 30 bytes
    assert decode(stream, max_event_bytes=30).events == [E("x", "e", "1")]
    assert decode(stream, max_event_bytes=29).error == too_big(29)


def test_limit_counts_a_line_end_as_one_byte(decode: Decode) -> None:
    for end in [b"\n", b"\r", b"\r\n"]:
        stream = b"data: 1" + end + b"data: 2" + end + end
        assert decode(stream, max_event_bytes=16).events == [E("1\n2")]
        assert decode(stream, max_event_bytes=15).error == too_big(15)


def test_limit_ignores_the_bom(decode: Decode) -> None:
    assert decode(BOM + b"data: x\n\n", max_event_bytes=8).events == [E("x")]


def test_unfinished_line_over_the_limit_raises(decode: Decode) -> None:
    outcome = decode(b"data: x\n\n: " + b"k" * 100, max_event_bytes=50)
    assert outcome.events == [E("x")]
    assert outcome.error == too_big(50)


def test_many_comments_without_a_blank_line_count(decode: Decode) -> None:
    assert decode(b": ping\n" * 10, max_event_bytes=70).error is None
    assert decode(b": ping\n" * 10, max_event_bytes=69).error == too_big(69)


def test_limit_error_comes_from_the_feed_that_crosses_it() -> None:
    decoder = SSEDecoder(max_event_bytes=10)
    assert decoder.feed(b"data: 123") == []  # 9 bytes
    assert decoder.feed(b"4") == []  # 10
    with pytest.raises(SSEError) as info:
        decoder.feed(b"\n")  # 11
    assert str(info.value) == too_big(10)
    assert info.value.events == []


def test_limit_error_keeps_the_events_before_it() -> None:
    decoder = SSEDecoder(max_event_bytes=10)
    with pytest.raises(SSEError) as info:
        decoder.feed(b"data: a\n\ndata: b\n\ndata: 0123456789\n\ndata: c\n\n")
    assert info.value.events == [E("a"), E("b")]
    assert info.value.message == too_big(10)


def test_decoder_is_dead_after_an_error() -> None:
    decoder = SSEDecoder(max_event_bytes=4)
    with pytest.raises(SSEError, match=re.escape(too_big(4))):
        decoder.feed(b"data: a\n\n")
    for call in [lambda: decoder.feed(b"\n"), decoder.close]:
        with pytest.raises(SSEError) as info:
            call()
        assert str(info.value) == too_big(4)
        assert info.value.events == []


def test_sse_error_is_an_ikproxy_value_error_and_pickles() -> None:
    error = SSEError(too_big(5), [E("a")])
    assert isinstance(error, ValueError)
    assert isinstance(error, IkproxyError)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.events) == (too_big(5), [E("a")])


def test_close_returns_nothing_and_may_be_repeated() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b\n") == [E("a")]
    assert decoder.close() == []
    assert decoder.close() == []


def test_feed_after_close_raises() -> None:
    decoder = SSEDecoder()
    decoder.close()
    with pytest.raises(RuntimeError) as info:
        decoder.feed(b"data: a\n\n")
    assert str(info.value) == "feed() called after close()"


def test_feed_takes_bytes_like_objects_only() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(bytearray(b"data: a\n")) == []
    assert decoder.feed(memoryview(b"\n")) == [E("a")]
    with pytest.raises(TypeError) as info:
        decoder.feed("data: a\n\n")  # type: ignore[arg-type]
    assert str(info.value) == "feed() takes bytes, not str"


@pytest.mark.parametrize(
    ("limit", "error", "message"),
    [
        (0, ValueError, "max_event_bytes must be at least 1, not 0"),
        (-5, ValueError, "max_event_bytes must be at least 1, not -5"),
        (True, TypeError, "max_event_bytes must be an int, not bool"),
        (1.5, TypeError, "max_event_bytes must be an int, not float"),
    ],
)
def test_bad_limit_is_refused(limit: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        SSEDecoder(max_event_bytes=limit)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_default_limit() -> None:
    assert SSEDecoder().max_event_bytes == DEFAULT_MAX_EVENT_BYTES == 64 * 1024 * 1024


# -- Helpers ----------------------------------------------------------------------------


def test_iter_events() -> None:
    chunks = [b"data: a\n", b"\nda", b"ta: b\n\n", b"data: c\n"]
    assert list(iter_events(chunks)) == [E("a"), E("b")]


def test_iter_events_yields_what_came_before_an_error() -> None:
    seen: list[ServerSentEvent] = []
    with pytest.raises(SSEError) as info:
        seen.extend(iter_events([b"data: a\n\ndata: 123456789\n\n"], max_event_bytes=10))
    assert seen == [E("a")]
    assert str(info.value) == too_big(10)


async def _chunks(items: list[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


@pytest.mark.anyio
async def test_aiter_events() -> None:
    chunks = [b"data: a\n", b"\nda", b"ta: b\n\n", b"data: c\n"]
    assert [event async for event in aiter_events(_chunks(chunks))] == [E("a"), E("b")]


@pytest.mark.anyio
async def test_aiter_events_yields_what_came_before_an_error() -> None:
    seen: list[ServerSentEvent] = []

    async def collect() -> None:
        chunks = _chunks([b"data: a\n\ndata: 1234\n\n"])
        async for event in aiter_events(chunks, max_event_bytes=8):
            seen.append(event)

    with pytest.raises(SSEError) as info:
        await collect()
    assert seen == [E("a")]
    assert str(info.value) == too_big(8)


# -- Against a plain transcription of the spec ------------------------------------------


@dataclass
class Reference:
    """The spec's algorithm, line by line, on the whole stream at once.

    `positions` holds, for each event, the index of the stream byte that ended its blank
    line (a CR for a CRLF blank line: CR alone already ends a line).
    """

    events: list[ServerSentEvent]
    positions: list[int]
    last_event_id: str | None
    retry: int | None
    error: str | None


def reference(stream: bytes, limit: int = DEFAULT_MAX_EVENT_BYTES) -> Reference:
    offset = 3 if stream.startswith(BOM) else 0
    events: list[ServerSentEvent] = []
    positions: list[int] = []
    data, event_type, id_buffer = "", "", None
    last_event_id: str | None = None
    retry: int | None = None
    size = 0
    start = offset
    for match in re.finditer(rb"\r\n|\r|\n", stream[offset:]):
        line = stream[start : offset + match.start()]
        end = offset + match.start()
        start = offset + match.end()
        if not line:
            size = 0
            last_event_id = id_buffer
            if data:
                events.append(E(data[:-1], event_type or "message", last_event_id, retry))
                positions.append(end)
            data, event_type = "", ""
            continue
        size += len(line) + 1
        if size > limit:
            return Reference(events, positions, last_event_id, retry, too_big(limit))
        text = line.decode("utf-8", "replace")
        if text.startswith(":"):
            continue
        if ":" in text:
            name, value = text.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = text, ""
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                id_buffer = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
    # Bytes that might still become a BOM are counted once that is settled.
    if size + len(stream) - start > limit and not BOM.startswith(stream):
        return Reference(events, positions, last_event_id, retry, too_big(limit))
    return Reference(events, positions, last_event_id, retry, None)


# Pieces that make interesting streams: field names, separators, line ends, BOM
# bytes, NUL, multi-byte and invalid UTF-8.
PIECES = [
    b"data",
    b"event",
    b"id",
    b"retry",
    b"Data",
    b":",
    b": ",
    b" ",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"x",
    b"42",
    b"\x00",
    BOM,
    b"\xef",
    b"\xbb",
    "é€𝄞".encode(),
    b"\xe2\x82",
    b"\xff",
    b"\x80",
]
streams = st.lists(st.sampled_from(PIECES), max_size=60).map(b"".join)


@st.composite
def chunked(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=20).map(sorted))
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=500)
@given(stream=streams, data=st.data())
def test_decoder_matches_the_spec_however_the_stream_is_split(
    stream: bytes, data: st.DataObject
) -> None:
    expected = reference(stream)
    outcome = Outcome(expected.events, expected.last_event_id, expected.retry)
    assert run([stream]) == outcome
    assert run([stream[i : i + 1] for i in range(len(stream))]) == outcome
    assert run(data.draw(chunked(stream))) == outcome


@settings(max_examples=500)
@given(stream=streams, limit=st.integers(1, 40), data=st.data())
def test_limit_matches_the_spec_however_the_stream_is_split(
    stream: bytes, limit: int, data: st.DataObject
) -> None:
    expected = reference(stream, limit)
    for chunks in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
        outcome = run(chunks, max_event_bytes=limit)
        assert (outcome.events, outcome.error) == (expected.events, expected.error)
    outcome = run(data.draw(chunked(stream)), max_event_bytes=limit)
    assert (outcome.events, outcome.error) == (expected.events, expected.error)


@settings(max_examples=300)
@given(stream=streams)
def test_each_event_comes_out_of_the_byte_that_ends_its_blank_line(stream: bytes) -> None:
    expected = reference(stream)
    decoder = SSEDecoder()
    positions = []
    for index in range(len(stream)):
        positions += [index] * len(decoder.feed(stream[index : index + 1]))
    assert positions == expected.positions

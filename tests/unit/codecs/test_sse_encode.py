"""`encode`, `encode_comment` and `encode_retry`: exact bytes, and every refusal."""

from __future__ import annotations

import dataclasses
import enum
import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikproxy.codecs.sse import _SLICE, ServerSentEvent, encode, encode_comment, encode_retry

E = ServerSentEvent


def reference(event: ServerSentEvent) -> bytes:
    """The wire form, spelled out: one `data:` line per line of data."""
    lines = [f"event: {event.event}"] if event.event is not None else []
    lines += [f"id: {event.id}"] if event.id is not None else []
    lines += [f"retry: {event.retry}"] if event.retry is not None else []
    lines += [f"data: {line}" for line in re.split("\r\n|\r|\n", event.data)]
    return "".join(line + "\n" for line in lines).encode() + b"\n"


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (E("hello"), b"data: hello\n\n"),
        (
            E('{"progress": 0.5}', "progress", "12"),
            b'event: progress\nid: 12\ndata: {"progress": 0.5}\n\n',
        ),
        (E("x", "a", "1", 3000), b"event: a\nid: 1\nretry: 3000\ndata: x\n\n"),
        (E("x", retry=0), b"retry: 0\ndata: x\n\n"),
        (E("x", id="7"), b"id: 7\ndata: x\n\n"),
    ],
)
def test_fields_come_in_order_event_id_retry_data(event: ServerSentEvent, wire: bytes) -> None:
    assert encode(event) == wire


def test_empty_data_still_gets_a_data_line() -> None:
    assert encode(E()) == b"data: \n\n"
    assert encode(E("", "ping")) == b"event: ping\ndata: \n\n"


def test_empty_id_is_sent() -> None:
    assert encode(E("x", id="")) == b"id: \ndata: x\n\n"


def test_empty_event_name_is_sent() -> None:
    assert encode(E("x", event="")) == b"event: \ndata: x\n\n"


def test_every_field_keeps_a_leading_space() -> None:
    wire = encode(E("  two", " e", " i"))
    assert wire == b"event:  e\nid:  i\ndata:   two\n\n"


def test_data_is_split_on_lf_cr_and_crlf() -> None:
    assert encode(E("a\nb\rc\r\nd")) == b"data: a\ndata: b\ndata: c\ndata: d\n\n"


def test_data_line_ends_at_the_edges_give_empty_lines() -> None:
    assert encode(E("\n")) == b"data: \ndata: \n\n"
    assert encode(E("\r\n\r\nx\r")) == b"data: \ndata: \ndata: x\ndata: \n\n"
    assert encode(E("\n\r")) == b"data: \ndata: \ndata: \n\n"


def test_other_line_breaks_are_not_split() -> None:
    # str.splitlines() would split on these; SSE does not.
    text = "a\x0bb\x0cc\x1cd\x1de\x1ef\x85g\u2028h\u2029i"
    assert encode(E(text)) == b"data: " + text.encode() + b"\n\n"


def test_colons_and_nul_in_data_are_kept() -> None:
    assert encode(E("a: b:\x00c")) == b"data: a: b:\x00c\n\n"


def test_output_is_utf8() -> None:
    assert encode(E("é𝄞", "ü", "ß")) == "event: ü\nid: ß\ndata: é𝄞\n\n".encode()


def test_str_subclasses_are_sent_as_their_text() -> None:
    class Kind(str, enum.Enum):  # formats as "Kind.PROGRESS" on Python 3.12+
        PROGRESS = "progress"

    class Loud(str):
        def __str__(self) -> str:
            return "LOUD"

        def __format__(self, spec: str) -> str:
            return "LOUD"

    event = E(Loud("d"), Kind.PROGRESS, Loud("7"))
    assert encode(event) == b"event: progress\nid: 7\ndata: d\n\n"
    assert encode(E(Loud("x" * 3 * _SLICE))) == b"data: " + b"x" * 3 * _SLICE + b"\n\n"
    assert encode_comment(Loud("c")) == b": c\n"


def test_retry_accepts_int_like_values() -> None:
    class Index:
        def __index__(self) -> int:
            return 25

    assert encode(E("x", retry=Index())) == b"retry: 25\ndata: x\n\n"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"event": "a\nb"}, ValueError, "event must not contain CR or LF"),
        ({"event": "a\rb"}, ValueError, "event must not contain CR or LF"),
        ({"event": "\r\n"}, ValueError, "event must not contain CR or LF"),
        ({"id": "1\n"}, ValueError, "id must not contain CR, LF or NUL"),
        ({"id": "\r1"}, ValueError, "id must not contain CR, LF or NUL"),
        ({"id": "1\x002"}, ValueError, "id must not contain CR, LF or NUL"),
        ({"retry": -1}, ValueError, "retry must be a non-negative int, not -1"),
        ({"retry": True}, ValueError, "retry must be a non-negative int, not bool"),
        ({"retry": False}, ValueError, "retry must be a non-negative int, not bool"),
        ({"retry": 1.0}, ValueError, "retry must be a non-negative int, not float"),
        ({"retry": "5"}, ValueError, "retry must be a non-negative int, not str"),
        ({"retry": Fraction(1)}, ValueError, "retry must be a non-negative int, not Fraction"),
        ({"data": b"x"}, TypeError, "data must be str, not bytes"),
        ({"data": None}, TypeError, "data must be str, not NoneType"),
        ({"data": 5}, TypeError, "data must be str, not int"),
        ({"event": b"e"}, TypeError, "event must be str or None, not bytes"),
        ({"id": 5}, TypeError, "id must be str or None, not int"),
        ({"data": "a\ud800"}, ValueError, "data must not contain lone surrogates"),
        ({"event": "\udfff"}, ValueError, "event must not contain lone surrogates"),
        ({"id": "\ud800x"}, ValueError, "id must not contain lone surrogates"),
    ],
)
def test_what_cannot_be_sent_is_refused(
    changes: dict[str, object], error: type[Exception], message: str
) -> None:
    event = dataclasses.replace(E("data", "e", "1"), **changes)  # type: ignore[arg-type]
    with pytest.raises(error) as info:
        encode(event)
    assert str(info.value) == message
    assert type(info.value) is error


line_ends = st.sampled_from(["\r", "\n", "\r\n"])
texts = st.lists(st.one_of(line_ends, st.text(max_size=4)), max_size=12).map("".join)


@given(data=texts, event=st.sampled_from([None, "", "p"]), id=st.sampled_from([None, "", "1"]))
def test_encode_matches_the_reference(data: str, event: str | None, id: str | None) -> None:
    assert encode(E(data, event, id)) == reference(E(data, event, id))


@pytest.mark.parametrize("edge", [-2, -1, 0, 1])
@pytest.mark.parametrize("insert", ["\r\n", "\r", "\n", "\r\r\n", "\n\n", "é", "𝄞"])
def test_large_data_with_line_ends_at_slice_edges(edge: int, insert: str) -> None:
    # Large data is encoded a slice at a time: put line ends across the slice edges.
    data = "a" * (_SLICE + edge) + insert + "b" * (_SLICE - len(insert)) + insert + "c"
    assert encode(E(data, "r", "9")) == reference(E(data, "r", "9"))
    assert encode(E(data + "\r")) == reference(E(data + "\r"))


def test_large_data_with_a_lone_surrogate() -> None:
    with pytest.raises(ValueError, match=r"^data must not contain lone surrogates$"):
        encode(E("x" * 3 * _SLICE + "\ud800"))


def test_event_is_immutable() -> None:
    event = E("x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.data = "y"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
    assert event == E("x", None, None, None)
    assert hash(event) == hash(E("x"))
    assert [(f.name, f.default) for f in dataclasses.fields(E)] == [
        ("data", ""),
        ("event", None),
        ("id", None),
        ("retry", None),
    ]
    assert E(retry=5, data="d") == E("d", None, None, 5)
    assert dataclasses.replace(event, id="2") == E("x", id="2")


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("", b":\n"),
        ("keepalive", b": keepalive\n"),
        ("a\nb", b": a\n: b\n"),
        ("a\r\nb\rc", b": a\n: b\n: c\n"),
        ("a\n", b": a\n:\n"),
        (" x: y", b":  x: y\n"),
        ("é", ": é".encode() + b"\n"),
    ],
)
def test_comment(text: str, wire: bytes) -> None:
    assert encode_comment(text) == wire


def test_comment_default_is_empty() -> None:
    assert encode_comment() == b":\n"


def test_comment_errors() -> None:
    with pytest.raises(TypeError) as type_info:
        encode_comment(b"x")  # type: ignore[arg-type]
    assert str(type_info.value) == "comment must be str, not bytes"
    with pytest.raises(ValueError, match=r"^comment must not contain lone surrogates$"):
        encode_comment("\ud800")


def test_retry_line() -> None:
    assert encode_retry(3000) == b"retry: 3000\n\n"
    assert encode_retry(0) == b"retry: 0\n\n"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "retry must be a non-negative int, not -1"),
        (True, "retry must be a non-negative int, not bool"),
        (2.5, "retry must be a non-negative int, not float"),
        (None, "retry must be a non-negative int, not NoneType"),
    ],
)
def test_retry_line_errors(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        encode_retry(value)  # type: ignore[arg-type]

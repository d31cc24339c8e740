"""Property: whatever `encode` writes, `SSEDecoder` reads back, however it is split."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from ikproxy.codecs.sse import ServerSentEvent, SSEDecoder, encode, encode_comment

# Text with what is hard to carry: line ends, NUL, colons, leading spaces, a BOM,
# astral and combining characters, and anything else Unicode has.
hard = st.sampled_from(["\r", "\n", "\r\n", "\0", ":", " ", "  ", "\ufeff", "𝄞", "e\u0301"])
text = st.lists(st.one_of(hard, st.text(max_size=5)), max_size=12).map("".join)
names = st.one_of(st.none(), text.filter(lambda s: "\r" not in s and "\n" not in s))
ids = st.one_of(st.none(), text.filter(lambda s: not set(s) & {"\r", "\n", "\0"}))
retries = st.one_of(st.none(), st.integers(0, 10**12))
events = st.builds(ServerSentEvent, data=text, event=names, id=ids, retry=retries)


def expected(sent: list[ServerSentEvent]) -> list[ServerSentEvent]:
    """What a reader gets: LF line ends, "message" for no type, id and retry in force."""
    out = []
    event_id: str | None = None
    retry: int | None = None
    for event in sent:
        event_id = event.id if event.id is not None else event_id
        retry = event.retry if event.retry is not None else retry
        data = event.data.replace("\r\n", "\n").replace("\r", "\n")
        out.append(ServerSentEvent(data, event.event or "message", event_id, retry))
    return out


def decode(chunks: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    out = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out + decoder.close()


@st.composite
def split(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=30).map(sorted))
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=300)
@given(sent=st.lists(events, min_size=1, max_size=6), comments=st.lists(text), data=st.data())
def test_round_trip_under_every_split(
    sent: list[ServerSentEvent], comments: list[str], data: st.DataObject
) -> None:
    # Comments go between events, as keepalives do.
    pieces = [encode(event) for event in sent]
    for index, comment in enumerate(comments):
        pieces.insert(index % (len(pieces) + 1), encode_comment(comment))
    stream = b"".join(pieces)
    want = expected(sent)
    assert decode([stream]) == want
    assert decode([stream[i : i + 1] for i in range(len(stream))]) == want
    assert decode(data.draw(split(stream))) == want


@given(event=events)
def test_encoded_event_has_no_cr_and_one_blank_line(event: ServerSentEvent) -> None:
    wire = encode(event)
    assert b"\r" not in wire
    assert wire.endswith(b"\n\n")
    assert b"\n\n" not in wire[:-1]

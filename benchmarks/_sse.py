"""SSE codec speed and memory, side by side with sse-starlette (encoding) and httpx-sse
(decoding), the libraries a Python project would otherwise use.

Targets:

- encode 200k small progress events: at least 2x sse-starlette's events/s;
- encode one 20 MiB data string (one line, and a line break every 76 characters): at
  least 5x faster than sse-starlette, peak memory at most 2x the payload;
- decode those 200k events in 64 KiB chunks, LF and CRLF line ends: at least 2x
  httpx-sse's events/s;
- decode one 20 MiB single-line event in 64 KiB chunks: at least 3x faster than
  httpx-sse, linear in size (5, 10 and 20 MiB), peak memory at most 2x the payload.

Peak memory is tracemalloc's peak over one call, inputs made beforehand, so it counts
the result and every temporary. "Payload" is the encoded event, the bytes on the wire
(for decoding, the bytes fed in); 64 KiB of headroom covers object headers and one
chunk. Times are the best of several runs, ours and the peer's alternately, with the
garbage collector off (as `timeit` does).

Run alone with ``.venv/bin/python benchmarks/_sse.py``.
"""

from __future__ import annotations

import codecs
import gc
import json
import time
import tracemalloc
from collections.abc import Callable, Iterator

from httpx_sse._decoders import SSEDecoder as PeerDecoder
from httpx_sse._decoders import SSELineDecoder as PeerLineDecoder
from sse_starlette.event import ServerSentEvent as PeerEvent

from ikproxy.codecs.sse import ServerSentEvent, SSEDecoder, encode

COUNT = 200_000  # small progress events
BATCH = 20_000  # events per timed batch when encoding
CHUNK = 64 * 1024  # bytes per feed() call
MIB = 1024 * 1024
ROUNDS = 5  # timings per case; the best one counts
HEADROOM = 64 * 1024  # memory allowance on top of 2x the payload


def timed(function: Callable[[], object]) -> float:
    """Wall time of one call, with the garbage collector off."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        function()
        return time.perf_counter() - start
    finally:
        gc.enable()


def best_of(ours: Callable[[], object], peer: Callable[[], object]) -> tuple[float, float]:
    """Best time of each, timed alternately so both see the same machine."""
    ours_best = peer_best = float("inf")
    for _ in range(ROUNDS):
        ours_best = min(ours_best, timed(ours))
        peer_best = min(peer_best, timed(peer))
    return ours_best, peer_best


def peak_memory(function: Callable[[], object]) -> int:
    """Peak bytes allocated during one call (its result included)."""
    gc.collect()
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def progress_data(count: int) -> list[str]:
    """The JSON data of small progress events, about 120 bytes each."""
    return [
        json.dumps(
            {
                "state": "RUNNING",
                "progress": round(i / count, 4),
                "eta": [1200 + i % 500, 3400 + i % 900],
                "step": i,
                "msg": "run",
                "uuid": "6f1c2a9e-3b7d-4e5a-9c1f-2d8e7b6a5c4f",
            },
            separators=(",", ":"),
        )
        for i in range(count)
    ]


def chunked(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


# -- The peers, driven as their own code drives them ---------------------------------------


def peer_encode(data: str, event: str | None = None, id: str | None = None) -> bytes:
    return PeerEvent(data=data, event=event, id=id).encode()


def peer_iter_sse(chunks: list[bytes]) -> Iterator[object]:
    """httpx-sse's `EventSource.iter_sse` over byte chunks, as `httpx.Response.iter_text`
    would decode them (an incremental UTF-8 decoder with replacement)."""
    text_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def iter_text() -> Iterator[str]:
        for chunk in chunks:
            text = text_decoder.decode(chunk)
            if text:
                yield text
        text = text_decoder.decode(b"", True)
        if text:
            yield text

    def iter_sse_lines() -> Iterator[str]:  # httpx_sse._api._iter_sse_lines
        line_decoder = PeerLineDecoder()
        for text in iter_text():
            yield from line_decoder.decode(text)
        yield from line_decoder.flush()

    decoder = PeerDecoder()
    for line in iter_sse_lines():  # EventSource.iter_sse
        line = line.rstrip("\n")
        sse = decoder.decode(line)
        if sse is not None:
            yield sse


def ours_decode(chunks: list[bytes]) -> Iterator[ServerSentEvent]:
    decoder = SSEDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.close()


def consume(events: Iterator[object]) -> int:
    """Count events without keeping them, as a streaming consumer does."""
    count = 0
    for _ in events:
        count += 1
    return count


# -- The cases -------------------------------------------------------------------------


Row = tuple[str, str, str, str, "bool | None"]  # case, ours, peer, comparison, pass


def encode_small(datas: list[str]) -> Row:
    batches = [
        [(data, str(i + start)) for i, data in enumerate(datas[start : start + BATCH])]
        for start in range(0, len(datas), BATCH)
    ]
    assert encode(ServerSentEvent(datas[0], "progress", "0")) == (
        b"event: progress\nid: 0\ndata: " + datas[0].encode() + b"\n\n"
    )
    ours_s = peer_s = 0.0
    for batch in batches:

        def ours(batch: list[tuple[str, str]] = batch) -> None:
            for data, event_id in batch:
                encode(ServerSentEvent(data, "progress", event_id))

        def peer(batch: list[tuple[str, str]] = batch) -> None:
            for data, event_id in batch:
                PeerEvent(data=data, event="progress", id=event_id).encode()

        ours_best, peer_best = best_of(ours, peer)
        ours_s += ours_best
        peer_s += peer_best
    return _speed_row(f"encode {len(datas) // 1000}k events", len(datas), ours_s, peer_s, 2)


def decode_small(datas: list[str], crlf: bool) -> Row:
    stream = b"".join(
        encode(ServerSentEvent(data, "progress", str(i))) for i, data in enumerate(datas)
    )
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    chunks = chunked(stream)
    last = list(ours_decode(chunks))[-1]
    assert last == ServerSentEvent(datas[-1], "progress", str(len(datas) - 1))
    peer_last = list(peer_iter_sse(chunks))[-1]
    assert (peer_last.data, peer_last.id) == (last.data, last.id)  # type: ignore[attr-defined]
    ours_s, peer_s = best_of(
        lambda: consume(ours_decode(chunks)), lambda: consume(peer_iter_sse(chunks))
    )
    ends = "CRLF" if crlf else "LF"
    return _speed_row(f"decode {len(datas) // 1000}k events, {ends}", len(datas), ours_s, peer_s, 2)


def encode_big(size: int, wrap: int | None) -> list[Row]:
    if wrap is None:
        data = "x" * size
        label = "one line"
    else:
        line = "x" * (wrap - 1) + "\n"
        data = (line * (size // wrap + 1))[:size]
        label = f"LF every {wrap}"
    event = ServerSentEvent(data, "result", "1")
    wire = encode(event)
    for encoded in (wire, peer_encode(data, "result", "1")):
        assert list(ours_decode(chunked(encoded))) == [ServerSentEvent(data, "result", "1")]
    ours_s, peer_s = best_of(lambda: encode(event), lambda: peer_encode(data, "result", "1"))
    case = f"encode {size // MIB} MiB, {label}"
    return [
        _time_row(case, ours_s, peer_s, 5),
        _memory_row(
            case, len(wire), lambda: encode(event), lambda: peer_encode(data, "result", "1")
        ),
    ]


def decode_big() -> list[Row]:
    rows = []
    times = {}
    for size in (5, 10, 20):
        value = "x" * (size * MIB)
        chunks = chunked(encode(ServerSentEvent(value)))
        assert list(ours_decode(chunks)) == [ServerSentEvent(value, "message")]
        assert [e.data for e in peer_iter_sse(chunks)] == [value]  # type: ignore[attr-defined]
        del value

        def ours(chunks: list[bytes] = chunks) -> int:
            return consume(ours_decode(chunks))

        def peer(chunks: list[bytes] = chunks) -> int:
            return consume(peer_iter_sse(chunks))

        ours_s, peer_s = best_of(ours, peer)
        times[size] = ours_s
        row = _time_row(f"decode {size} MiB line", ours_s, peer_s, 3)
        if size != 20:  # the target is for 20 MiB; these are for the linearity check
            row = (*row[:3], f"{peer_s / ours_s:.2f}x faster", None)
        rows.append(row)
        if size == 20:
            total = sum(map(len, chunks))
            rows.append(_memory_row("decode 20 MiB line", total, ours, peer))
    # Linear: 4x the bytes may take at most 6x the time (quadratic work would take 16x).
    growth = times[20] / times[5]
    rows.append(
        (
            "decode 5->20 MiB time",
            f"x{growth:.1f}",
            "",
            "4x the bytes: <= x6",
            growth <= 6,
        )
    )
    return rows


def _speed_row(case: str, count: int, ours_s: float, peer_s: float, target: float) -> Row:
    ratio = peer_s / ours_s
    return (
        case,
        f"{count / ours_s / 1e3:,.0f}k ev/s",
        f"{count / peer_s / 1e3:,.0f}k ev/s",
        f"{ratio:.2f}x faster (>= {target}x)",
        ratio >= target,
    )


def _time_row(case: str, ours_s: float, peer_s: float, target: float) -> Row:
    ratio = peer_s / ours_s
    return (
        case,
        f"{ours_s * 1e3:.1f} ms",
        f"{peer_s * 1e3:.1f} ms",
        f"{ratio:.2f}x faster (>= {target}x)",
        ratio >= target,
    )


def _memory_row(
    case: str, payload: int, ours: Callable[[], object], peer: Callable[[], object]
) -> Row:
    ours_peak = peak_memory(ours)
    peer_peak = peak_memory(peer)
    return (
        f"{case}: peak",
        f"{ours_peak / MIB:.1f} MiB {ours_peak / payload:.2f}x",
        f"{peer_peak / MIB:.1f} MiB {peer_peak / payload:.2f}x",
        f"payload {payload / MIB:.1f} MiB (<= 2x)",
        ours_peak <= 2 * payload + HEADROOM,
    )


def run() -> list[Row]:
    """Measure every case."""
    datas = progress_data(COUNT)
    rows = [encode_small(datas)]
    rows += encode_big(20 * MIB, None)
    rows += encode_big(20 * MIB, 76)
    rows.append(decode_small(datas, crlf=False))
    rows.append(decode_small(datas, crlf=True))
    rows += decode_big()
    return rows


def main() -> None:
    size = sum(len(d) for d in progress_data(1000)) // 1000
    print(
        f"SSE codec against sse-starlette (encode) and httpx-sse (decode): {COUNT // 1000}k "
        f"progress events with ~{size}-byte JSON data, and 20 MiB events; chunks of "
        f"{CHUNK // 1024} KiB; best of {ROUNDS}, GC off"
    )
    print(f"{'case':<34}{'ikproxy':>22}{'peer':>22}  {'comparison':<32}")
    for case, ours, peer, comparison, passed in run():
        verdict = "" if passed is None else "PASS" if passed else "FAIL"
        print(f"{case:<34}{ours:>22}{peer:>22}  {comparison:<32}{verdict}")


if __name__ == "__main__":
    main()

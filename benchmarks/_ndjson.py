"""NDJSON framing overhead: `encode_line` and `NDJSONDecoder` against their JSON library.

Target: at most 25% slower than the JSON library doing the same work with the plainest
framing (``dumps(obj) + b"\\n"``; ``for line in data.split(b"\\n"): loads(line)``), for
both backends (orjson, and the standard library's `json`).

Run alone with ``.venv/bin/python benchmarks/_ndjson.py``.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from typing import Any

from ikproxy.codecs import ndjson

try:
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]

TARGET = 0.25  # allowed overhead
COUNT = 200_000  # progress objects in all
BATCH = 10_000  # objects per timed batch
CHUNK = 64 * 1024  # bytes per feed() call
ROUNDS = 7  # timings per batch; the best one counts


def progress_objects(count: int) -> list[dict[str, Any]]:
    """Small progress events, about 120 bytes each once encoded."""
    return [
        {
            "event": "progress",
            "seq": i,
            "state": "RUNNING",
            "progress": round(i / count, 4),
            "eta": [1200 + i % 500, 3400 + i % 900],
            "uuid": "6f1c2a9e-3b7d-4e5a-9c1f-2d8e7b6a5c4f",
        }
        for i in range(count)
    ]


def timed(function: Callable[[], object]) -> float:
    """Wall time of one call, with the garbage collector off (as `timeit` does).

    The functions timed keep no results, as in ``for line in lines: loads(line)``: kept
    results make the timing measure the memory allocator more than the code.
    """
    gc.disable()
    try:
        start = time.perf_counter()
        function()
        return time.perf_counter() - start
    finally:
        gc.enable()


def compare(pairs: list[tuple[Callable[[], object], Callable[[], object]]]) -> tuple[float, float]:
    """Total time of ours and of the baseline over all batches.

    Each batch is timed ROUNDS times, ours and baseline alternately, and its best time
    counts: on a busy machine the minimum is the figure least disturbed by other work.
    """
    ours_total = base_total = 0.0
    for ours, base in pairs:
        ours_best = base_best = float("inf")
        for _ in range(ROUNDS):
            ours_best = min(ours_best, timed(ours))
            base_best = min(base_best, timed(base))
        ours_total += ours_best
        base_total += base_best
    return ours_total, base_total


def _std_dumps_line() -> Callable[[Any], bytes]:
    encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    encode = encoder.encode
    return lambda obj: (encode(obj) + "\n").encode()


def _encode_pairs(
    batches: list[list[dict[str, Any]]], backend: str
) -> list[tuple[Callable[[], object], Callable[[], object]]]:
    encode_line = ndjson.encode_line
    plain: Callable[[Any], bytes] = (
        (lambda obj: orjson.dumps(obj) + b"\n") if backend == "orjson" else _std_dumps_line()
    )

    def pair(batch: list[dict[str, Any]]) -> tuple[Callable[[], object], Callable[[], object]]:
        def ours() -> None:
            for obj in batch:
                encode_line(obj)

        def base() -> None:
            for obj in batch:
                plain(obj)

        return ours, base

    return [pair(batch) for batch in batches]


def _decode_pairs(
    batches: list[list[dict[str, Any]]], backend: str
) -> list[tuple[Callable[[], object], Callable[[], object]]]:
    loads: Callable[[bytes], Any] = orjson.loads if backend == "orjson" else json.loads
    pairs: list[tuple[Callable[[], object], Callable[[], object]]] = []
    for batch in batches:
        data = b"".join(ndjson.encode_line(obj) for obj in batch)
        chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]

        def ours(chunks: list[bytes] = chunks) -> None:
            decoder = ndjson.NDJSONDecoder()
            for chunk in chunks:
                decoder.feed(chunk)
            decoder.close()

        def plain(data: bytes = data) -> None:
            for line in data.split(b"\n"):
                if line:
                    loads(line)

        assert list(ndjson.iter_values(chunks)) == batch
        pairs.append((ours, plain))
    return pairs


def run() -> list[tuple[str, str, float, float]]:
    """Measure every case: (operation, backend, ours in seconds, baseline in seconds)."""
    objects = progress_objects(COUNT)
    batches = [objects[i : i + BATCH] for i in range(0, COUNT, BATCH)]
    rows = []
    saved = ndjson._orjson
    try:
        for backend in ["json"] if orjson is None else ["json", "orjson"]:
            ndjson._orjson = orjson if backend == "orjson" else None
            for operation, make_pairs in [("encode", _encode_pairs), ("decode", _decode_pairs)]:
                ours_s, base_s = compare(make_pairs(batches, backend))
                rows.append((operation, backend, ours_s, base_s))
    finally:
        ndjson._orjson = saved
    return rows


def main() -> None:
    size = len(b"".join(ndjson.encode_line(obj) for obj in progress_objects(1000))) // 1000
    print(
        f"NDJSON framing: {COUNT} progress objects of ~{size} bytes, "
        f"decoded in {CHUNK // 1024} KiB chunks; batches of {BATCH}, best of {ROUNDS} each, GC off"
    )
    print(f"{'case':<16}{'ikproxy':>10}{'plain':>10}{'overhead':>10}  target <= {TARGET:.0%}")
    for operation, backend, ours_s, base_s in run():
        overhead = ours_s / base_s - 1
        verdict = "PASS" if overhead <= TARGET else "FAIL"
        print(
            f"{operation + ' ' + backend:<16}{ours_s * 1e3:>8.1f}ms{base_s * 1e3:>8.1f}ms"
            f"{overhead:>+10.1%}  {verdict}"
        )


if __name__ == "__main__":
    main()

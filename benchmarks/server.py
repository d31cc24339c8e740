"""ikproxy's streaming response against sse-starlette, under one uvicorn worker, in one run.

    ./dev bench server            # or: .venv/bin/python benchmarks/server.py [--quick]

Each peer gets a fresh server process per measurement. Printed side by side:
events/s for one stream of 100k events, time to first event, one 20 MiB
result event end to end, and 500 concurrent streams of one event per second
for 20 s (server RSS growth per stream, server CPU seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from _procs import cpu_seconds, free_port, rss_kib, serving

PEERS = ("ours", "peer")
NAMES = {"ours": "ikproxy", "peer": "sse-starlette"}


@contextmanager
def _server() -> Iterator[tuple[str, int]]:
    port = free_port()
    command = [
        *(sys.executable, "-m", "uvicorn", "_server_app:app", "--port", str(port)),
        *("--no-access-log", "--log-level", "warning", "--limit-concurrency", "2000"),
        *("--backlog", "2048"),
    ]
    with serving(command, port, stderr=subprocess.PIPE) as server:
        yield server


async def _stream(url: str) -> tuple[float, float, int]:
    """(time to first event, total time, bytes) for one stream."""
    start = time.perf_counter()
    first = None
    size = 0
    async with httpx.AsyncClient(timeout=None) as http, http.stream("GET", url) as response:
        async for chunk in response.aiter_raw():
            if first is None and b"event:" in chunk:
                first = time.perf_counter() - start
            size += len(chunk)
    return first or 0.0, time.perf_counter() - start, size


def bench_many(n: int, repeats: int) -> dict[str, tuple[float, float]]:
    out = {}
    for peer in PEERS:
        with _server() as (url, _):
            runs = [asyncio.run(_stream(f"{url}/{peer}/many?n={n}")) for _ in range(repeats)]
        out[peer] = (n / min(r[1] for r in runs), min(r[0] for r in runs))
    return out


async def _first_event(url: str) -> float:
    """Time from sending the request (on a new connection) to the first event."""
    async with httpx.AsyncClient(timeout=None) as http:
        start = time.perf_counter()
        async with http.stream("GET", url) as response:
            async for chunk in response.aiter_raw():
                if b"event:" in chunk:
                    return time.perf_counter() - start
    raise RuntimeError("no event")


def bench_ttfe(repeats: int) -> dict[str, float]:
    """Median time to first event, the peers interleaved on one server (noise hits both)."""
    samples: dict[str, list[float]] = {peer: [] for peer in PEERS}
    with _server() as (url, _):
        for _ in range(repeats):
            for peer in PEERS:
                samples[peer].append(asyncio.run(_first_event(f"{url}/{peer}/many?n=1")))
    return {peer: sorted(xs)[len(xs) // 2] for peer, xs in samples.items()}


def bench_big(mb: int, repeats: int) -> dict[str, float]:
    out = {}
    for peer in PEERS:
        with _server() as (url, _):
            out[peer] = min(
                asyncio.run(_stream(f"{url}/{peer}/big?n={mb}"))[1] for _ in range(repeats)
            )
    return out


async def _many_streams(url: str, count: int, seconds: int, pid: int) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=None, limits=limits) as http:
        opened = 0
        first_events = asyncio.Event()

        async def one() -> None:
            nonlocal opened
            async with http.stream("GET", url) as response:
                async for chunk in response.aiter_raw():
                    if b"event:" in chunk:
                        opened += 1
                        if opened == count:
                            first_events.set()

        base_rss = rss_kib(pid)
        base_cpu = cpu_seconds(pid)
        tasks = [asyncio.create_task(one()) for _ in range(count)]
        await asyncio.wait_for(first_events.wait(), 60)
        await asyncio.sleep(seconds * 0.75)
        peak_rss = rss_kib(pid)
        await asyncio.gather(*tasks)
        cpu = cpu_seconds(pid) - base_cpu
    return (peak_rss - base_rss) / count, cpu


def bench_concurrent(count: int, seconds: int, repeats: int) -> dict[str, tuple[float, float]]:
    """(RSS growth per stream, server CPU): the best of `repeats` runs, each on a fresh server.

    "floor" is a bare Starlette StreamingResponse of constant bytes over the same
    upstream: what any Starlette response costs here, for scale; "raw-floor" the same
    bytes from a bare ASGI callable (what uvicorn alone costs), and "raw-ours"
    ikproxy's response called as a bare ASGI app, past Starlette's routing and
    middleware.
    """
    out = {}
    for peer in (*PEERS, "floor", "raw-floor", "raw-ours"):
        runs = []
        for _ in range(repeats):
            with _server() as (url, pid):
                asyncio.run(_stream(f"{url}/{peer}/many?n=10"))  # warm up imports and caches
                tick = f"{url}/{peer}/tick?n={seconds}"
                runs.append(asyncio.run(_many_streams(tick, count, seconds, pid)))
        out[peer] = (min(r[0] for r in runs), min(r[1] for r in runs))
    return out


def _row(
    label: str, ours: float, peer: float, unit: str, better: str, target: float | None
) -> None:
    ratio = ours / peer if better == "higher" else peer / ours
    verdict = "" if target is None else ("PASS" if ratio >= target else "FAIL")
    goal = "" if target is None else f">= {target:g}x"
    print(f"{label:<44} {ours:>12.3f} {peer:>14.3f} {unit:<9} {ratio:>6.2f}x {goal:<8} {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    n, mb, count, seconds = (10_000, 4, 50, 5) if args.quick else (100_000, 20, 500, 20)

    print(f"{'':<44} {'ikproxy':>12} {'sse-starlette':>14} {'unit':<9} {'ratio':>7} target")
    many = bench_many(n, 3)
    _row(f"one stream of {n:,} events", many["ours"][0], many["peer"][0], "events/s", "higher", 1.5)
    ttfe = bench_ttfe(41)
    _row("time to first event (median)", ttfe["ours"] * 1e3, ttfe["peer"] * 1e3, "ms", "lower", 1.0)
    big = bench_big(mb, 3)
    _row(f"one {mb} MiB result event, end to end", big["ours"], big["peer"], "s", "lower", 1.5)
    conc = bench_concurrent(count, seconds, 1 if args.quick else 2)
    print(f"{count} concurrent streams, one event/s for {seconds} s (best of runs):")
    ours_kib, peer_kib = conc["ours"][0], conc["peer"][0]
    print(
        f"{'  server RSS growth per stream':<44} {ours_kib:>12.1f} {peer_kib:>14.1f} KiB"
        f"       target <= 30 KiB  {'PASS' if ours_kib <= 30 else 'FAIL'}"
    )
    _row("  server CPU", conc["ours"][1], conc["peer"][1], "s", "lower", 2.0)
    floor_kib, floor_cpu = conc["floor"]
    print(
        "  for scale, a bare Starlette StreamingResponse of constant bytes (the floor): "
        f"{floor_kib:.1f} KiB per stream, {floor_cpu:.3f} s CPU"
    )
    raw_kib, raw_cpu = conc["raw-floor"]
    print(
        "  the same bytes from a bare ASGI callable (uvicorn alone): "
        f"{raw_kib:.1f} KiB per stream, {raw_cpu:.3f} s CPU"
    )
    bare_kib, bare_cpu = conc["raw-ours"]
    print(
        "  ikproxy's response as a bare ASGI app (no routing, no middleware): "
        f"{bare_kib:.1f} KiB per stream, {bare_cpu:.3f} s CPU"
    )


if __name__ == "__main__":
    main()

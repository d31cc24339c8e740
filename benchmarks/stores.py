"""The Redis store against the in-memory default, side by side, in one run.

    ./dev bench stores            # or: .venv/bin/python benchmarks/stores.py [--quick]

Needs `redis-server` (Debian's package; `./dev bench stores` installs it). It
starts its own, on a free loopback port, without persistence. Printed:

1. Per event written by a run's producer: Redis round trips (counted at
   redis-py's connection), Redis server CPU (`INFO cpu`), and the producing
   process's own CPU, against the in-memory store; once with events 1 ms
   apart (each written alone) and once as fast as they come (batched).
2. Resume latency, request to first event, on loopback: the in-memory store
   resumes on the process that ran the run; the Redis store on another one.
3. Concurrent resumable streams on one uvicorn worker, one event per second:
   server CPU and RSS growth per stream, Redis store against in-memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import redis
import redis.asyncio.connection

from _procs import cpu_seconds, free_port, rss_kib, serving
from ikproxy import Progress, Results, TaskIO
from ikproxy.runs.registry import RunRegistry
from ikproxy.stores import MemoryStore, RedisStore, Store

ROUND_TRIPS = [0]


def _count_round_trips() -> None:
    """Count every packed command redis-py's asyncio connections send: one per round trip."""
    cls = redis.asyncio.connection.AbstractConnection
    original = cls.send_packed_command

    async def counted(self: Any, command: Any, check_health: bool = True) -> None:
        ROUND_TRIPS[0] += 1
        await original(self, command, check_health)

    cls.send_packed_command = counted  # type: ignore[method-assign]


@contextmanager
def _redis() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "Ready to accept connections" in line:
                    break
            else:
                raise RuntimeError("redis-server did not start")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


@contextmanager
def _server(redis_url: str | None) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {**os.environ}
    env.pop("IKPROXY_BENCH_REDIS", None)
    if redis_url:
        env["IKPROXY_BENCH_REDIS"] = redis_url
    command = [
        *(sys.executable, "-m", "uvicorn", "_stores_app:app", "--port", str(port)),
        *("--no-access-log", "--log-level", "warning", "--limit-concurrency", "3000"),
        *("--backlog", "4096"),
    ]
    with serving(command, port, env=env, stderr=None) as server:
        yield server


def _redis_cpu(url: str) -> float:
    info = redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# -- 1. per event written ------------------------------------------------------


async def _events(n: int, pace: float) -> AsyncIterator[Progress]:
    for i in range(n):
        yield Progress("STARTED", (n - i, n - i + 100), run_id="5f0c2a9e", name="generate")
        await asyncio.sleep(pace)
    yield Progress("SUCCESS", run_id="5f0c2a9e", results=Results((TaskIO("text", "done"),)))


async def _write(store: Store, n: int, pace: float) -> tuple[float, int]:
    """(this process's CPU seconds, round trips) for one run of `n` events and its follower.

    The run's creation (one round trip per run, before it is submitted) is not counted.
    """
    registry = RunRegistry(60, store=store)
    log = await registry.create(request_id="bench")
    trips, cpu = ROUND_TRIPS[0], time.process_time()
    run = registry.start(_events(n, pace), request_id="bench", timeout=None, log=log)
    async for _ in run.follow(0):
        pass
    await run.written()
    return time.process_time() - cpu, ROUND_TRIPS[0] - trips


#: How each run of `bench_writes` spaces its events.
PACES = {"20 ms apart": 0.02, "1 ms apart": 0.001, "as fast as they come": 0.0}


def bench_writes(redis_url: str, n: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for mode, pace in PACES.items():
        count = n // 10 if pace >= 0.01 else n
        memory_cpu, _ = asyncio.run(_write(MemoryStore(), count, pace))

        async def with_redis(count: int = count, pace: float = pace) -> tuple[float, int, float]:
            store = RedisStore(redis_url, prefix="bench")
            try:
                await _write(store, 3, 0.0)  # connect and load the script before measuring
                before = _redis_cpu(redis_url)
                cpu, trips = await _write(store, count, pace)
                return cpu, trips, _redis_cpu(redis_url) - before
            finally:
                await store.aclose()

        redis_cpu, trips, server = asyncio.run(with_redis())
        events = count + 1
        out[mode] = {
            "trips": trips / events,
            "redis_us": server / events * 1e6,
            "ours_us": redis_cpu / events * 1e6,
            "memory_us": memory_cpu / events * 1e6,
        }
    return out


# -- 2. resume latency ------------------------------------------------------------


def _first_event_ms(http: httpx.Client, url: str, last_event_id: str) -> float:
    start = time.perf_counter()
    with http.stream("GET", f"{url}/run", headers={"Last-Event-ID": last_event_id}) as response:
        for chunk in response.iter_raw():
            if b"event:" in chunk:
                return (time.perf_counter() - start) * 1e3
    raise RuntimeError(f"no event on resume: {response.status_code}")


def _run_token(http: httpx.Client, url: str) -> str:
    body = http.get(f"{url}/run", params={"n": 3}).text
    ids = re.findall(r"^id: (.+):\d+$", body, re.M)
    return str(ids[0])


def bench_resume(redis_url: str, count: int) -> dict[str, tuple[float, float]]:
    samples: dict[str, list[float]] = {"memory": [], "redis": []}
    with (
        _server(None) as (memory, _),
        _server(redis_url) as (a, _),
        _server(redis_url) as (b, _),
        httpx.Client(timeout=10) as http,
    ):
        for _ in range(count):
            token = _run_token(http, memory)
            samples["memory"].append(_first_event_ms(http, memory, f"{token}:1"))
            token = _run_token(http, a)
            samples["redis"].append(_first_event_ms(http, b, f"{token}:1"))
    out = {}
    for name, xs in samples.items():
        xs.sort()
        out[name] = (xs[len(xs) // 2], xs[min(len(xs) - 1, int(len(xs) * 0.99))])
    return out


# -- 3. concurrent streams ------------------------------------------------------------


async def _many_streams(url: str, count: int, seconds: int, pid: int) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=None, limits=limits) as http:
        opened = 0
        all_open = asyncio.Event()

        async def one() -> None:
            nonlocal opened
            params = {"n": seconds, "pace": 1.0}
            async with http.stream("GET", f"{url}/run", params=params) as response:
                async for chunk in response.aiter_raw():
                    if b"event:" in chunk and not all_open.is_set():
                        opened += 1
                        if opened == count:
                            all_open.set()

        base_rss, base_cpu = rss_kib(pid), cpu_seconds(pid)
        tasks = [asyncio.create_task(one()) for _ in range(count)]
        await asyncio.wait_for(all_open.wait(), 120)
        await asyncio.sleep(seconds * 0.75)
        peak_rss = rss_kib(pid)
        await asyncio.gather(*tasks)
        cpu = cpu_seconds(pid) - base_cpu
    return (peak_rss - base_rss) / count, cpu


def bench_concurrent(redis_url: str, count: int, seconds: int) -> dict[str, tuple[float, float]]:
    out = {}
    for name, url in (("memory", None), ("redis", redis_url)):
        with _server(url) as (base, pid):
            with httpx.Client() as http:
                _run_token(http, base)  # warm up imports, caches and connections
            out[name] = asyncio.run(_many_streams(base, count, seconds, pid))
    return out


def _row(label: str, ours: float, peer: float, unit: str, goal: str = "") -> None:
    ratio = ours / peer if peer else float("inf")
    print(f"{label:<46} {ours:>10.2f} {peer:>10.2f} {unit:<10} {ratio:>7.2f}x  {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    n, resumes, count, seconds = (300, 50, 100, 4) if args.quick else (2000, 300, 1000, 10)
    _count_round_trips()
    with _redis() as redis_url:
        print(f"{'':<46} {'redis':>10} {'memory':>10} {'unit':<10} {'ratio':>8}")
        writes = bench_writes(redis_url, n)
        for mode, figures in writes.items():
            events = n if PACES[mode] < 0.01 else n // 10
            print(f"per event written, one run of {events:,} events {mode}:")
            trips = figures["trips"]
            verdict = "PASS" if trips <= 1.0 else "FAIL"
            print(
                f"{'  Redis round trips':<46} {trips:>10.3f} {'-':>10} {'per event':<10}"
                f"{'':>9}  target <= 1  {verdict}"
            )
            print(
                f"{'  Redis server CPU':<46} {figures['redis_us']:>10.1f} {'-':>10} "
                f"{'us/event':<10}"
            )
            _row("  producing process CPU", figures["ours_us"], figures["memory_us"], "us/event")
        resume = bench_resume(redis_url, resumes)
        print(
            f"resume latency, request to first event ({resumes} resumes;"
            " redis: on another process):"
        )
        p50 = resume["redis"][0]
        _row(
            "  p50",
            p50,
            resume["memory"][0],
            "ms",
            f"target redis p50 < 20 ms  {'PASS' if p50 < 20 else 'FAIL'}",
        )
        _row("  p99", resume["redis"][1], resume["memory"][1], "ms")
        conc = bench_concurrent(redis_url, count, seconds)
        print(f"{count} concurrent resumable streams on one worker, one event/s for {seconds} s:")
        rss = conc["redis"][0] / conc["memory"][0] if conc["memory"][0] > 0 else float("inf")
        cpu = conc["redis"][1] / conc["memory"][1] if conc["memory"][1] > 0 else float("inf")
        _row(
            "  server RSS growth per stream",
            conc["redis"][0],
            conc["memory"][0],
            "KiB",
            f"target <= 1.5x  {'PASS' if rss <= 1.5 else 'FAIL'}",
        )
        _row(
            "  server CPU",
            conc["redis"][1],
            conc["memory"][1],
            "s",
            f"target <= 1.5x  {'PASS' if cpu <= 1.5 else 'FAIL'}",
        )


if __name__ == "__main__":
    main()

"""Runs on Celery workers: progress latency, web memory per stream, and the celery-progress way.

    ./dev bench celery_latency      # or: .venv/bin/python benchmarks/celery_latency.py [--quick]

Needs `redis-server` and the `celery` extra. Starts its own redis-server, two
Celery workers of 4 processes each (`benchmarks/_celery_app.py`), and uvicorn
web instances, all on loopback. Printed, side by side in one run:

1. Progress latency, from the task's report (on a worker) to the client's
   receipt (through Redis and a web instance): p50, p95, max; targets
   p50 < 20 ms and p95 < 100 ms.
2. The same runs the `celery-progress` way: the task calls `update_state`,
   the client polls the result backend every 500 ms; the latency from each
   report to the poll that first reflects it, and how many distinct states
   the client got (the others were overwritten between two polls).
3. 200 concurrent runs on the two workers: all complete; the web instance's
   RSS growth per open stream, against 200 concurrent streams of the same run
   on a `LocalDeployment` in the web process (target: within 1.5x).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from _procs import HERE, free_port, rss_kib, serving

ROOT = HERE.parent


@contextmanager
def _redis() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp]
        proc = subprocess.Popen([*args, "--save", "", "--appendonly", "no"], stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if b"Ready to accept connections" in line:
                    break
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


@contextmanager
def _workers(env: dict[str, str], count: int = 2, processes: int = 4) -> Iterator[None]:
    procs = []
    ready = []
    for index in range(count):
        args = [sys.executable, "-m", "celery", "-A", "_celery_app:celery_app", "worker"]
        args += ["-c", str(processes), "-n", f"bench{index}@%h", "-l", "info"]
        args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        proc = subprocess.Popen(
            args, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        procs.append(proc)
        event = threading.Event()
        ready.append(event)

        def pump(proc: subprocess.Popen[str] = proc, event: threading.Event = event) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if " ready." in line:
                    event.set()

        threading.Thread(target=pump, daemon=True).start()
    try:
        for event in ready:
            if not event.wait(60):
                raise RuntimeError("a Celery worker did not start")
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)


def _web(env: dict[str, str]) -> tuple[list[str], int]:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "_celery_app:app", "--port", str(port)]
    return [*args, "--no-access-log", "--log-level", "warning"], port


def _now_us() -> int:
    return int(time.time() * 1_000_000) % 10**12


async def _one_run(client: httpx.AsyncClient, url: str, n: int, pace: float) -> list[float]:
    """Latencies (ms) of each progress of one run, from its report to its receipt here."""
    latencies: list[float] = []
    params = {"n": n, "pace": pace}
    async with client.stream("GET", url + "/run", params=params) as response:
        assert response.status_code == 200, response.status_code
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            received = _now_us()
            data = json.loads(line[6:])
            reported = (data.get("eta") or [None])[0]
            if data.get("state") == "STARTED" and reported is not None:
                latencies.append((received - reported) / 1000)
    return latencies


async def _latency(url: str, runs: int, n: int, pace: float, at_once: int) -> list[float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=at_once + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for start in range(0, runs, at_once):
            batch = [_one_run(client, url, n, pace) for _ in range(min(at_once, runs - start))]
            for found in await asyncio.gather(*batch):
                latencies += found
    return latencies


def _backend_way(env: dict[str, str], runs: int, n: int, pace: float) -> tuple[list[float], int]:
    """celery-progress: `update_state`, and a client polling the result backend every 500 ms."""
    os.environ.update(env)
    sys.path.insert(0, str(HERE))
    from _celery_app import celery_app, ticks_backend

    latencies: list[float] = []
    seen_total = 0
    for _ in range(runs):
        result = ticks_backend.apply_async(kwargs={"n": n, "pace": pace})
        known = 0  # reports the client learned of (from the latest state, which lists them)
        while True:
            state, info = result.state, result.info
            now = time.time()
            if state == "PROGRESS" and isinstance(info, dict):
                times = info["times"]
                latencies += [(now - t) * 1000 for t in times[known:]]
                seen_total += 1 if len(times) > known else 0
                known = len(times)
            if state in ("SUCCESS", "FAILURE"):
                break
            time.sleep(0.5)
        result.forget()
    celery_app.close()
    return latencies, seen_total


async def _concurrent(url: str, pid: int, count: int, n: int, pace: float) -> tuple[int, int]:
    """Open `count` streams at once; (completed runs, peak RSS growth of the web process, KiB)."""
    base = rss_kib(pid)
    peak = base
    done = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_kib(pid))
            await asyncio.sleep(0.05)

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal done
        async with client.stream("GET", url + "/run", params={"n": n, "pace": pace}) as response:
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
        if b"event: result" in body:
            done += 1

    limits = httpx.Limits(max_connections=count + 10)
    sampler = asyncio.create_task(sample())
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await asyncio.gather(*(one(client) for _ in range(count)))
    stop.set()
    await sampler
    return done, peak - base


def _percentiles(values: list[float]) -> str:
    values = sorted(values)
    p50 = statistics.median(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return f"p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   max {values[-1]:7.1f} ms   ({len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args()
    runs, concurrent = (16, 60) if args.quick else (64, 200)
    with _redis() as redis_url:
        env = {**os.environ, "IKPROXY_BENCH_REDIS": redis_url, "PYTHONPATH": str(HERE)}
        with _workers(env):
            command, port = _web(env)
            with serving(command, port, env=env, health="/health") as (url, pid):
                asyncio.run(_latency(url, 8, 5, 0.02, 8))  # warm up every worker process
                print("1. progress latency, task report -> client receipt (2 workers x 4)")
                found = asyncio.run(_latency(url, runs, 20, 0.05, 8))
                print(f"   ikproxy (Redis stream, XREAD BLOCK)    {_percentiles(found)}")
                backend, seen = _backend_way(env, max(4, runs // 8), 20, 0.05)
                total = max(4, runs // 8) * 20
                print(f"   celery-progress (poll every 500 ms)    {_percentiles(backend)}")
                print(f"      progress events the client could show: {seen} of {total} reports")
                print(f"\n2. {concurrent} concurrent runs (n=5, 0.2 s apart) on 2 workers x 4")
                done, grown = asyncio.run(_concurrent(url, pid, concurrent, 5, 0.2))
                print(f"   completed: {done} of {concurrent}")
                celery_kib = grown / concurrent
        local_env = {**env, "IKPROXY_BENCH_LOCAL": "1"}
        command, port = _web(local_env)
        with serving(command, port, env=local_env, health="/health") as (url, pid):
            asyncio.run(_latency(url, 8, 5, 0.02, 8))
            done_local, grown_local = asyncio.run(_concurrent(url, pid, concurrent, 5, 0.2))
            local_kib = grown_local / concurrent
        print("   web RSS growth per open stream:")
        print(f"      CeleryDeployment  {celery_kib:7.1f} KiB")
        print(f"      LocalDeployment   {local_kib:7.1f} KiB   (completed {done_local})")
        print(f"      ratio             {celery_kib / max(local_kib, 0.1):7.2f}x")


if __name__ == "__main__":
    main()

"""Soak: many concurrent streams on one worker; completions, first-event latency, RSS, CPU.

Each stream is one run of 10 progress events 0.5 s apart and a result. The server runs
as a subprocess on loopback; RSS and CPU are read from /proc for its process.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import httpx

from _procs import cpu_seconds, free_port, rss_kib, serving


def _command(server: str, port: int) -> list[str]:
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--limit-concurrency",
        "3000",
        "--backlog",
        "4096",
    ]
    if server == "asgi-app/uvicorn":
        return [*uvicorn, "_soak_app:app"]
    if server == "django-asgi/uvicorn":
        return [*uvicorn, "_soak_app:django_app"]
    if server == "litestar/uvicorn":
        return [*uvicorn, "_soak_app:litestar_app"]
    if server == "flask/gunicorn-gthread":
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gthread",
            "--threads",
            "256",
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "_soak_app:flask_app",
        ]
    raise SystemExit(f"unknown server {server}")


async def _soak(url: str, count: int, pid: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    firsts: list[float] = []
    events = 0
    completed = 0
    peak = 0
    ready = asyncio.Event()
    opened = 0

    async def one(http: httpx.AsyncClient) -> None:
        nonlocal events, completed, opened
        start = time.perf_counter()
        async with http.stream("GET", url + "/run", params={"prompt": "x"}) as response:
            first = True
            async for chunk in response.aiter_bytes():
                if first:
                    firsts.append(time.perf_counter() - start)
                    opened += 1
                    if opened == count:
                        ready.set()
                    first = False
                events += chunk.count(b"event: ")
                if b"event: result" in chunk:
                    completed += 1

    base_rss = rss_kib(pid)
    cpu0 = cpu_seconds(pid)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        tasks = [asyncio.ensure_future(one(http)) for _ in range(count)]
        try:
            await asyncio.wait_for(ready.wait(), 60)
            peak = rss_kib(pid)
        except asyncio.TimeoutError:
            peak = rss_kib(pid)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    cpu = cpu_seconds(pid) - cpu0
    firsts.sort()
    return {
        "completed": completed,
        "errors": sum(isinstance(r, BaseException) for r in results),
        "ttfe_p50_ms": 1000 * statistics.median(firsts) if firsts else float("nan"),
        "ttfe_p99_ms": 1000 * firsts[int(len(firsts) * 0.99) - 1] if firsts else float("nan"),
        "rss_per_stream_kib": (peak - base_rss) / count,
        "cpu_us_per_event": 1e6 * cpu / max(events, 1),
        "events": events,
    }


def http_client() -> httpx.Client:
    return httpx.Client(timeout=60)


def run(server: str, count: int) -> dict[str, float]:
    port = free_port()
    with serving(_command(server, port), port) as (url, pid):
        # Warm the server's imports and caches first.
        with http_client() as http, http.stream("GET", url + "/run", params={"prompt": "x"}) as r:
            for _ in r.iter_bytes():
                pass
        return asyncio.run(_soak(url, count, pid))


PLAN = [
    ("asgi-app/uvicorn", 1000),
    ("django-asgi/uvicorn", 1000),
    ("litestar/uvicorn", 1000),
    ("flask/gunicorn-gthread", 200),
]


def main() -> None:
    only = sys.argv[1:]
    print(
        f"{'server':26} {'streams':>7} {'done':>5} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'KiB/stream':>10} {'CPU us/event':>12}"
    )
    for server, count in PLAN:
        if only and server not in only:
            continue
        r = run(server, count)
        done = int(r["completed"])
        print(
            f"{server:26} {count:7d} {done:5d} {r['ttfe_p50_ms']:7.1f} "
            f"{r['ttfe_p99_ms']:7.1f} {r['rss_per_stream_kib']:10.1f} "
            f"{r['cpu_us_per_event']:12.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

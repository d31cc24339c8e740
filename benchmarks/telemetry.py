"""What ikproxy's OpenTelemetry instrumentation costs the server, in one run.

    ./dev bench telemetry         # or: .venv/bin/python benchmarks/telemetry.py [--quick]

Server CPU time (user + system, read from /proc) for 300 concurrent streams of 20
events each, through the whole proxy under one uvicorn worker, in three setups:

- (a) `nosdk`: the instrumentation with the OpenTelemetry API and no SDK;
- (b) `sdk`: the SDK configured, with the Prometheus reader and a span processor
  that drops every span;
- (c) `before`: the code before the instrumentation, commit f98c6d9 (extracted with
  `git archive` into a temporary folder and put first on the server's PYTHONPATH).

The three servers run side by side (each idle while another is measured) after a
warm-up load each; every round loads each of them once, back to back, in an order that
rotates, so that noise from other processes hits the three alike. The ratios are the
medians of each round's own ratios. Targets:
(a) within 3% of (c), (b) at most 1.20x (a).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from _procs import HERE, cpu_seconds, free_port, serving

BEFORE = "f98c6d9"
MODES = ("before", "nosdk", "sdk")
NAMES = {"before": "(c) before", "nosdk": "(a) API, no SDK", "sdk": "(b) SDK + Prometheus"}


def _extract_before(folder: Path) -> Path:
    """The source tree of `BEFORE` in `folder`; its `src` to put on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "archive", BEFORE, "src"], cwd=HERE.parent, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


async def _load(url: str, streams: int) -> int:
    """`streams` concurrent runs to their end; the events received."""
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def one() -> int:
            async with http.stream("GET", "/run", params={"prompt": "x"}) as response:
                body = b"".join([chunk async for chunk in response.aiter_raw()])
            assert response.status_code == 200, response.status_code
            assert b"event: result" in body, body[-200:]
            return body.count(b"\nid: ")

        return sum(await asyncio.gather(*(one() for _ in range(streams))))


def _command(port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", "_telemetry_app:app", "--port", str(port)),
        *("--no-access-log", "--log-level", "warning", "--backlog", "2048"),
    ]


def _env(mode: str, before: Path) -> dict[str, str]:
    env = {**os.environ, "IKPROXY_BENCH_MODE": mode}
    if mode == "before":
        env["PYTHONPATH"] = os.pathsep.join([str(before), env.get("PYTHONPATH", "")])
    return env


def _cpu_of_one_load(url: str, pid: int, streams: int) -> float:
    start = cpu_seconds(pid)
    events = asyncio.run(_load(url, streams))
    used = cpu_seconds(pid) - start
    assert events == streams * 20, events
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 rounds instead of 21")
    parser.add_argument("--streams", type=int, default=300)
    args = parser.parse_args()
    rounds = 6 if args.quick else 21
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        before = _extract_before(Path(folder))
        servers = {}
        for mode in MODES:
            port = free_port()
            servers[mode] = stack.enter_context(
                serving(_command(port), port, env=_env(mode, before))
            )
            asyncio.run(_load(servers[mode][0], args.streams))  # warm-up: imports, caches
        for n in range(rounds):
            order = MODES[n % 3 :] + MODES[: n % 3]  # each setup first, second, third in turn
            for mode in order:
                samples[mode].append(_cpu_of_one_load(*servers[mode], args.streams))
            print(f"round {n + 1}/{rounds}: " + ", ".join(
                f"{mode} {samples[mode][-1]:.3f} s" for mode in MODES
            ), flush=True)  # fmt: skip
    median = {mode: statistics.median(samples[mode]) for mode in MODES}
    print(f"\nserver CPU for {args.streams} concurrent streams of 20 events (median of {rounds})")
    for mode in MODES:
        print(f"  {NAMES[mode]:24} {median[mode]:.3f} s")
    total = {mode: sum(samples[mode]) for mode in MODES}
    # Paired: each round's ratio (its three loads ran back to back), then the median.
    a_c = statistics.median(a / c for a, c in zip(samples["nosdk"], samples["before"], strict=True))
    b_a = statistics.median(b / a for b, a in zip(samples["sdk"], samples["nosdk"], strict=True))
    print("\n             all rounds' CPU   median of the rounds' ratios   target")
    print(f"  (a) / (c)  {total['nosdk'] / total['before']:15.3f}   {a_c:28.3f}   <= 1.03")
    print(f"  (b) / (a)  {total['sdk'] / total['nosdk']:15.3f}   {b_a:28.3f}   <= 1.20")
    per_stream = median["before"] / args.streams * 1e6
    print(
        f"\nthe instrumentation's own CPU per run, in process (a stream costs {per_stream:.0f} us):"
    )
    for mode, cost in _own_cost().items():
        print(f"  {NAMES[mode]:24} {cost:6.1f} us   {cost / per_stream:6.1%} of a stream")


def _own_cost() -> dict[str, float]:
    """Microseconds per run of what the proxy does for telemetry (a RunObserver's life:
    span, current context, first event, end with its metrics), without and with the SDK."""
    code = (
        "import os, sys, timeit\n"
        "sys.path.insert(0, '.')\n"
        "import _telemetry_app\n"
        "from ikproxy.telemetry import RunObserver, default_telemetry\n"
        "t = default_telemetry()\n"
        "def life():\n"
        "    o = RunObserver(t, 'r', deployment='Steps')\n"
        "    with o.current():\n"
        "        pass\n"
        "    token = o.streaming()\n"
        "    o.first_event({'uuid': 'u'})\n"
        "    o.detach(token)\n"
        "    o.end('result', 20, 5000)\n"
        "life()\n"
        "print(min(timeit.repeat(life, number=2000, repeat=5)) / 2000 * 1e6)\n"
    )
    costs = {}
    for mode in ("nosdk", "sdk"):
        env = {**os.environ, "IKPROXY_BENCH_MODE": mode}
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=HERE, env=env, capture_output=True, text=True
        )
        costs[mode] = float(done.stdout.strip())
    return costs


if __name__ == "__main__":
    main()

"""`ikproxy demo --workers N`: a redis-server, N Celery workers and the web app, stopped on exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx

from tests.support.celery import alive, children, wait_for
from tests.support.servers import free_port, running_server

NO_SCALE = {"IKOMIA_ENDPOINT": None, "IKOMIA_TOKEN": None}


def _descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *_descendants(child)]
    return found


def test_the_demo_on_workers_runs_there_and_stops_every_process_it_started() -> None:
    port = free_port()
    command = ["-m", "ikproxy", "demo", "--workers", "2", "--port", str(port)]
    with running_server(command, ready=r"running at http://", env=NO_SCALE, timeout=60) as demo:
        base = f"http://127.0.0.1:{port}"
        started = set(_descendants(demo.pid))
        output = "".join(demo.output)  # type: ignore[attr-defined]
        assert "on 2 Celery workers" in output
        assert output.count("worker") >= 2
        assert len(started) == 3  # redis-server and two workers (their pools start later)
        with httpx.stream("GET", f"{base}/api/run", params={"prompt": "a cat"}, timeout=30) as run:
            assert run.status_code == 200
            body = run.read().decode()
        assert "event: result" in body
        assert '"name":"generate"' in body
        started |= set(_descendants(demo.pid))  # with the pool process that ran it
        assert len(started) >= 4
        page = httpx.get(f"{base}/", timeout=10).text
        assert '"backend":"local"' in page
        os.kill(demo.pid, signal.SIGTERM)  # the demo alone: it stops what it started
        assert demo.wait(timeout=30) == 0
        wait_for(lambda: not any(alive(pid) for pid in started), 10, "every process stopped")


def test_the_demo_on_zero_workers_is_a_usage_error() -> None:
    port = free_port()
    command = ["-m", "ikproxy", "demo", "--workers", "-1", "--port", str(port)]
    done = subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "--workers must be at least 1, not -1" in done.stderr

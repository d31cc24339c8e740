"""Celery workers and web instances of tests/support/celery_app.py, as real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from .servers import ROOT, free_port, running_server

#: The celery command of the interpreter running the tests.
CELERY = str(Path(sys.executable).parent / "celery")
APP = "tests.support.celery_app"


def app_env(
    redis_url: str, prefix: str, markers: Path, **more: str | None
) -> dict[str, str | None]:
    """The environment of a worker or an instance of the test app."""
    env: dict[str, str | None] = {
        "PYTHONPATH": str(ROOT),
        "IKPROXY_TEST_REDIS": redis_url,
        "IKPROXY_TEST_PREFIX": prefix,
        "IKPROXY_TEST_MARKERS": str(markers),
    }
    env.update({f"IKPROXY_TEST_{key.upper()}": value for key, value in more.items()})
    return env


@contextmanager
def celery_worker(
    env: Mapping[str, str | None],
    directory: Path,
    *,
    pool: str = "prefork",
    concurrency: int = 2,
    queues: str = "celery",
) -> Iterator[subprocess.Popen[str]]:
    """`celery -A tests.support.celery_app:celery_app worker`, started quick, until the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{pool}-{free_port()}@%h"
    args = [CELERY, "--workdir", str(ROOT), "-A", f"{APP}:celery_app", "worker"]
    args += ["--pool", pool, "-c", str(concurrency), "-Q", queues, "-n", name, "-l", "info"]
    args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    env = {**env, "TMPDIR": str(directory)}
    with running_server(args, ready=r"@\S+ ready\.", env=env, timeout=60) as proc:
        yield proc


@contextmanager
def web_instance(env: Mapping[str, str | None]) -> Iterator[str]:
    """One uvicorn process serving the test app; yields its base URL."""
    port = free_port()
    args = ["-m", "uvicorn", f"{APP}:app", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--no-access-log", "--lifespan", "off"]
    with running_server(args, ready="Uvicorn running on", env=env, timeout=60):
        yield f"http://127.0.0.1:{port}"


def children(pid: int) -> list[int]:
    """The pids of a process's children (a prefork worker's pool)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(condition: object, timeout: float, what: str) -> float:
    """Wait until `condition()` is true (checked every 20 ms); the time it took."""
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


def get_accepted(
    client: httpx.Client, url: str, timeout: float = 5.0, **params: object
) -> httpx.Response:
    """Start a streamed run, retrying while a slot of the last one is still being freed."""
    start = time.monotonic()
    while True:
        request = client.build_request("GET", url, params=params)
        response = client.send(request, stream=True)
        if response.status_code != 429 or time.monotonic() - start > timeout:
            return response
        response.close()
        time.sleep(0.05)

"""The module of the Celery tests: imported by the celery workers and by the web instances.

A `CeleryDeployment` of small tasks, one proxy mounted per task at `/<task>/`
(`/<task>/run`), resumable through the shared Redis store. The `*_t` tasks go to the
`threads` queue. Configured by the environment: `IKPROXY_TEST_REDIS` (the store),
`IKPROXY_TEST_BROKER` (the broker; default: the store's Redis), `IKPROXY_TEST_PREFIX`
(the store's keys), `IKPROXY_TEST_MARKERS` (a folder where the tasks leave a file
when they start and when their `finally` runs), `IKPROXY_TEST_WINDOW` (the resume
window; 0: none, the client's leaving cancels the run), `IKPROXY_TEST_TIMEOUT` (the
runs' deadline), `IKPROXY_TEST_MAX_RUNS` (`max_active_runs`).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
from celery import Celery
from starlette.applications import Starlette
from starlette.routing import Mount

from ikproxy.asgi import create_app
from ikproxy.deployments.celery import CeleryDeployment, Update, check_cancelled
from ikproxy.io import FileIO, ImageIO
from ikproxy.stores import RedisStore

REDIS = os.environ.get("IKPROXY_TEST_REDIS", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("IKPROXY_TEST_PREFIX", "ikproxy-test")
MARKERS = Path(os.environ.get("IKPROXY_TEST_MARKERS", "."))
WINDOW = float(os.environ.get("IKPROXY_TEST_WINDOW", "30"))

celery_app = Celery("ikproxy-tests", broker=os.environ.get("IKPROXY_TEST_BROKER", REDIS))
celery_app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
store = RedisStore(REDIS, prefix=PREFIX)
deployment = CeleryDeployment(
    celery_app,
    store=store,
    # Outputs over 100 kB go to files in this folder, which every instance reads.
    outputs_location=f"file://{MARKERS / 'outputs'}",
    redis_output_limit=100_000,
)


def _mark(name: str, text: str) -> None:
    if name:
        (MARKERS / name).write_text(text)


@deployment.task
def steps(*, n: int = 5, delay: float = 0.05) -> Iterator[Any]:
    """Report `n` progress steps `delay` seconds apart, then a text."""
    for i in range(n):
        time.sleep(delay)
        yield Update(fraction=(i + 1) / (n + 1), eta=delay * (n - i) * 1000)
    yield {"text": f"{n} steps, pid {os.getpid()}"}


@deployment.task
async def hold_async(*, marker: str = "") -> AsyncIterator[Any]:
    """Report progress, then wait until cancelled; leave markers."""
    _mark(marker + ".started", str(os.getpid()))
    try:
        yield 0.1
        await anyio.sleep(3600)
        yield {"text": "never"}
    finally:
        _mark(marker + ".finally", "async")


@deployment.task
def hold_sync(*, marker: str = "") -> dict[str, str]:
    """A sync function: works in small steps, calling check_cancelled()."""
    _mark(marker + ".started", str(os.getpid()))
    try:
        for _ in range(36000):
            time.sleep(0.05)
            check_cancelled()
        return {"text": "never"}
    finally:
        _mark(marker + ".finally", "sync")


@deployment.task
def hold_gen(*, marker: str = "") -> Iterator[Any]:
    """A sync generator: each step reports progress; closed between steps."""
    _mark(marker + ".started", str(os.getpid()))
    try:
        for i in range(36000):
            time.sleep(0.05)
            yield min(i / 36000, 1.0)
        yield {"text": "never"}
    finally:
        _mark(marker + ".finally", "generator")


# The same functions on the `threads` queue, which the threads-pool worker serves.
deployment.add_task(steps, "steps_t", queue="threads")
deployment.add_task(hold_sync, "hold_sync_t", queue="threads")


@deployment.task
def fails(*, n: int = 1) -> dict[str, str]:
    raise ValueError(f"secret detail {n}")


@deployment.task
def image(*, size: int = 64) -> ImageIO:
    """A PNG image of `size` x `size` pixels of noise (large ones do not compress)."""
    from PIL import Image

    return ImageIO.from_pil(Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)))


@deployment.task
def file(*, size: int = 1000) -> FileIO:
    """A file of `size` bytes (counting bytes, so that ranges can be checked)."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"ikproxy-test-{os.getpid()}-{size}.bin"
    path.write_bytes(bytes(i % 251 for i in range(size)))
    return FileIO(path, content_type="application/octet-stream")


_PARAMS: dict[str, Any] = {
    "steps": {"n": int, "delay": float, "bogus": int},  # bogus: refused by the task
    "steps_t": {"n": int, "delay": float},
    "hold_sync_t": {"marker": str},
    "hold_async": {"marker": str},
    "hold_sync": {"marker": str},
    "hold_gen": {"marker": str},
    "fails": {"n": int},
    "image": {"size": int},
    "file": {"size": int},
}


def _app(task: str) -> Any:
    return create_app(
        deployment,
        task=task,
        parameters=_PARAMS[task],
        resume_window=WINDOW or None,
        max_active_runs=int(os.environ.get("IKPROXY_TEST_MAX_RUNS", "100")),
        rate_limit=None,
        timeout=float(os.environ.get("IKPROXY_TEST_TIMEOUT", "60")),
        keepalive=1.0,
    )


app = Starlette(routes=[Mount(f"/{task}", _app(task)) for task in _PARAMS])

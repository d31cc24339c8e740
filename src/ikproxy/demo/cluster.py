"""`ikproxy demo --workers N` on one machine: a redis-server, N Celery workers, and the web app.

Each is a process of its own, started here and stopped (by its pid) when the
demo ends; Redis keeps nothing on disk. The web app is served by the caller.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

__all__ = ["ClusterError", "demo_cluster"]


class ClusterError(RuntimeError):
    """What the demo on workers needs is missing, or a process of it did not start."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a worker finishes its task), then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _process(args: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        _stop(proc)


def _wait_for_redis(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(f"redis-server exited: {log.read_text(errors='replace')[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise ClusterError("redis-server did not start within 10 s")


@contextmanager
def demo_cluster(workers: int, *, log: bool = True) -> Iterator[str]:
    """Run redis-server and `workers` Celery workers until the block ends; yields Redis's URL.

    The URL is also set as `IKPROXY_DEMO_REDIS`, which `ikproxy.demo.workers` reads.
    """
    if workers < 1:
        raise ClusterError(f"--workers must be at least 1, not {workers}")
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise ClusterError("the demo on workers needs redis-server (apt-get install redis-server)")
    try:
        import celery  # noqa: F401
    except ImportError:
        raise ClusterError("the demo on workers needs: pip install 'ikproxy[celery]'") from None
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ikproxy-demo-")))
        port = _free_port()
        url = f"redis://127.0.0.1:{port}/0"
        env = {**os.environ, "IKPROXY_DEMO_REDIS": url}
        args = [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        args += ["--save", "", "--appendonly", "no"]
        redis = stack.enter_context(_process(args, folder / "redis.log", env))
        _wait_for_redis(port, redis, folder / "redis.log")
        for index in range(workers):
            args = [sys.executable, "-m", "celery", "-A", "ikproxy.demo.workers:celery_app"]
            args += ["worker", "-c", "1", "-n", f"demo{index + 1}@%h", "-l", "warning"]
            args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
            worker = stack.enter_context(_process(args, folder / f"worker{index + 1}.log", env))
            if log:
                print(f"ikproxy: worker {index + 1} started (pid {worker.pid})", file=sys.stderr)
        if log:
            print(f"ikproxy: redis-server at {url} (pid {redis.pid})", file=sys.stderr)
        os.environ["IKPROXY_DEMO_REDIS"] = url
        yield url

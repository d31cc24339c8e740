"""A real redis-server on a free loopback port, in its own directory, stopped by its pid."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .servers import free_port, running_server

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@contextmanager
def redis_server(directory: Path, port: int | None = None, *options: str) -> Iterator[str]:
    """Run redis-server (no persistence, and `options`: `"--requirepass", "pw"`) until the
    block ends; yields its URL (without the password)."""
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    args += ["--save", "", "--appendonly", "no", "--protected-mode", "no", *options]
    with running_server(args, ready="Ready to accept connections"):
        yield f"redis://127.0.0.1:{port}/0"

"""What the benchmarks share: a free port, a server process waited for, its RSS and CPU.

Figures are read from /proc, for a process and its children (gunicorn's workers are
children of its master), so they hold for one process and for a forking server alike.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(
    command: Sequence[str],
    port: int,
    *,
    env: Mapping[str, str] | None = None,
    stderr: int | IO[str] | None = subprocess.DEVNULL,
    health: str = "/health",
) -> Iterator[tuple[str, int]]:
    """Start `command` (a server on `port`) in benchmarks/, wait until `health` answers;
    yield its URL and process id; stop it with SIGINT (SIGKILL after 10 s)."""
    proc = subprocess.Popen(
        list(command), cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client() as http:
            for _ in range(400):
                try:
                    http.get(url + health)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:  # a thread that just ended
            continue
        for child in children:
            pids += tree(int(child))
    return pids


def rss_kib(pid: int) -> int:
    """The resident memory of `pid` and its descendants, in KiB."""
    total = 0
    for p in tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time of `pid` and its descendants, in seconds."""
    total = 0.0
    for p in tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total

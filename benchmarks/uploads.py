"""A video upload through the proxy to (fake) SCALE storage, against a plain copy to it.

    ./dev bench uploads            # or: .venv/bin/python benchmarks/uploads.py [--mb 200]

The fake SCALE (`python -m ikproxy.testing`) and the proxy (uvicorn, one worker)
run as separate processes on loopback. `ikproxy` posts the video as a browser
would (multipart, to `/api/run`) and reads the stream to its result: the proxy
writes the upload to a temporary file and, while it arrives, the SCALE client
uploads it to storage (`SupportsStreamingUpload`); then the run is submitted.
`httpx copy` posts the same file straight to the storage (`POST /v1/objects/`,
multipart) with a JWT. Printed: the best time of each (MB/s), their ratio, the
CPU time each process spent per upload, and the proxy's peak RSS growth during
its uploads.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
TOKEN = "fake-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _process(args: list[str], url: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """A server process, ready once `url` answers; stopped by its pid."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=HERE,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client() as http:
            for _ in range(400):
                try:
                    http.get(url)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            else:
                raise RuntimeError(f"{args} did not start")
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) if match else 0


class _PeakRSS:
    """Samples a process's RSS every 5 ms in a thread; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_kib(self.pid))
            self._stop.wait(0.005)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _video(size: int, folder: Path) -> Path:
    path = folder / "clip.mp4"
    block = os.urandom(1024 * 1024)
    with path.open("wb") as file:
        file.write(HEAD)
        left = size - len(HEAD)
        while left > 0:
            file.write(block[: min(left, len(block))])
            left -= len(block)
    return path


def _through_proxy(proxy: str, path: Path) -> float:
    with httpx.Client(timeout=None) as http, path.open("rb") as file:
        start = time.perf_counter()
        files = {"video": ("clip.mp4", file, "video/mp4")}
        with http.stream("POST", f"{proxy}/api/run", files=files) as response:
            body = b"".join(response.iter_bytes())
        elapsed = time.perf_counter() - start
    if response.status_code != 200 or b"event: result" not in body:
        raise RuntimeError(f"the proxy run failed: {response.status_code} {body[-500:]!r}")
    return elapsed


def _plain_copy(scale: str, path: Path) -> float:
    with httpx.Client(timeout=None) as http, path.open("rb") as file:
        start = time.perf_counter()
        jwt = http.get(
            f"{scale}/v1/projects/jwt/",
            params={"endpoint": scale, "storage": "true"},
            headers={"Authorization": f"Token {TOKEN}"},
        ).json()["id_token"]
        response = http.post(
            f"{scale}/v1/objects/",
            files={"file": ("", file, "video/mp4")},
            headers={"Authorization": f"Bearer {jwt}"},
        )
        elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="video size in MB (200)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, best kept (3)")
    args = parser.parse_args()
    size = args.mb * 1_000_000
    scale_port, proxy_port = _free_port(), _free_port()
    scale = f"http://127.0.0.1:{scale_port}"
    proxy = f"http://127.0.0.1:{proxy_port}"
    fake = ["-m", "ikproxy.testing", "--port", str(scale_port), "--polls", "0"]
    fake += ["--next-poll-in", "5", "--input-type", "video"]
    server = ["-m", "uvicorn", "_upload_app:create", "--factory", "--port", str(proxy_port)]
    server += ["--no-access-log", "--log-level", "warning", "--workers", "1"]
    with tempfile.TemporaryDirectory(prefix="ikproxy-bench-") as folder:
        path = _video(size, Path(folder))
        with (
            _process(fake, f"{scale}/workflow") as fake_pid,
            _process(server, f"{proxy}/api/health", {"IKPROXY_BENCH_SCALE_URL": scale}) as pid,
        ):
            warm = Path(folder) / "warm.mp4"
            warm.write_bytes(HEAD + os.urandom(100_000))
            _through_proxy(proxy, warm)  # imports, connections, JWT: out of the figures
            baseline = _rss_kib(pid)
            ours, peer = [], []
            cpu = {"proxy": 0.0, "fake (ikproxy)": 0.0, "fake (copy)": 0.0}
            with _PeakRSS(pid) as rss:
                for _ in range(args.repeats):
                    before = _cpu_seconds(pid), _cpu_seconds(fake_pid)
                    ours.append(_through_proxy(proxy, path))
                    cpu["proxy"] += _cpu_seconds(pid) - before[0]
                    cpu["fake (ikproxy)"] += _cpu_seconds(fake_pid) - before[1]
                    before = _cpu_seconds(pid), _cpu_seconds(fake_pid)
                    peer.append(_plain_copy(scale, path))
                    cpu["fake (copy)"] += _cpu_seconds(fake_pid) - before[1]
    best_ours, best_peer = min(ours), min(peer)
    mb = size / 1e6
    print(f"video upload of {args.mb} MB to fake SCALE storage (best of {args.repeats})")
    print(f"  {'':<28}{'time':>10}{'MB/s':>10}")
    print(f"  {'ikproxy (browser -> run)':<28}{best_ours:>9.2f}s{mb / best_ours:>10.1f}")
    print(f"  {'httpx copy to storage':<28}{best_peer:>9.2f}s{mb / best_peer:>10.1f}")
    print(f"  throughput ratio ikproxy / httpx copy: {best_peer / best_ours:.2f}x (target >= 0.7x)")
    for name, seconds in cpu.items():
        print(f"  CPU per upload, {name + ':':<16}{seconds / args.repeats:>6.2f}s")
    load = os.getloadavg()[0]
    print(f"  machine: {os.cpu_count()} cores, load average {load:.2f}")
    growth = (rss.peak - baseline) / 1024
    print(f"  proxy peak RSS growth during uploads: {growth:.1f} MiB (target < 32 MiB)")


if __name__ == "__main__":
    main()

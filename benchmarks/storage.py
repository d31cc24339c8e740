"""A 200 MB video sent through SCALE storage by the client, against a plain httpx upload.

    ./dev bench storage            # or: .venv/bin/python benchmarks/storage.py [--size-mb N]

The fake SCALE server runs in its own process (`python -m ikproxy.testing`,
storage on the same port, written to disk). Each upload runs in a fresh
process of its own, so that its peak resident memory is its own: reported is
the growth of the peak RSS over the RSS just before the upload, and the
throughput. Peers, in one run, interleaved, best of three. The fake server
(multipart parsing, hashing, disk) bounds the throughput, so the times vary
from run to run; the memory figures do not. Peers:

* `ikproxy run`: `Client.run(path)` on a video workflow: the data type is
  inferred, the file uploaded to storage, then the run submitted and polled;
* `ikproxy put`: `Client.storage.put(path)` alone;
* `httpx`: a plain `httpx.AsyncClient.post(files=...)` of the same file, the
  floor (httpx streams a file part from disk);
* `ikomia-client`: the official client's `run(path)`, when its environment
  (`.venv-ikclient`, made by the fidelity tests) exists: it reads the file whole.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "fake-token"
OFFICIAL = ROOT / ".venv-ikclient" / "bin" / "python"

_MEMORY = """
def rss_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)
"""

WORKERS = {
    "ikproxy run": """
import anyio, time
from pathlib import Path
from ikproxy import Client

async def main(url, video):
    async with Client(url, TOKEN, api_url=url, scalefs_url=url) as client:
        await client.storage.infos()  # warm: JWT and connection
        before = rss_kib("VmRSS")
        started = time.perf_counter()
        await client.run(Path(video))
        return before, time.perf_counter() - started

before, elapsed = anyio.run(main, URL, VIDEO)
""",
    "ikproxy put": """
import anyio, time
from pathlib import Path
from ikproxy import Client

async def main(url, video):
    async with Client(url, TOKEN, api_url=url, scalefs_url=url) as client:
        await client.storage.infos()
        before = rss_kib("VmRSS")
        started = time.perf_counter()
        await client.storage.put(Path(video), content_type="video/mp4")
        return before, time.perf_counter() - started

before, elapsed = anyio.run(main, URL, VIDEO)
""",
    "httpx": """
import anyio, httpx, time

async def main(url, video):
    async with httpx.AsyncClient(base_url=url, timeout=None) as http:
        answer = await http.get(
            "/v1/projects/jwt/",
            params={"endpoint": url, "storage": "true"},
            headers={"Authorization": f"Token {TOKEN}"},
        )
        auth = {"Authorization": "Bearer " + answer.json()["id_token"]}
        (await http.get("/v1/infos", headers=auth)).raise_for_status()
        before = rss_kib("VmRSS")
        started = time.perf_counter()
        with open(video, "rb") as file:
            answer = await http.post(
                "/v1/objects/", files={"file": (None, file, "video/mp4")}, headers=auth
            )
        answer.raise_for_status()
        return before, time.perf_counter() - started

before, elapsed = anyio.run(main, URL, VIDEO)
""",
    "ikomia-client": """
import os, time
os.environ.update(IKOMIA_URL=URL, IKOMIA_SCALEFS_URL=URL, IKOMIA_TOKEN=TOKEN)
from ikclient.core.client import Client

with Client(URL) as client:
    client.storage.infos()
    client.get_workflow()
    before = rss_kib("VmRSS")
    started = time.perf_counter()
    client.run(VIDEO)
    elapsed = time.perf_counter() - started
""",
}


def _worker(name: str, url: str, video: Path) -> tuple[float, float]:
    """Run one upload in a fresh process: (peak RSS growth in MiB, seconds)."""
    python = str(OFFICIAL) if name == "ikomia-client" else sys.executable
    code = (
        f"URL, VIDEO, TOKEN = {url!r}, {str(video)!r}, {TOKEN!r}\n"
        + _MEMORY
        + textwrap.dedent(WORKERS[name])
        + "\nprint(before, rss_kib('VmHWM'), elapsed)\n"
    )
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stderr}")
    before, peak, elapsed = done.stdout.split()
    return (int(peak) - int(before)) / 1024, float(elapsed)


def _make_video(path: Path, size: int) -> None:
    """An MP4-looking file of `size` bytes (incompressible content), written in chunks."""
    chunk = os.urandom(1024 * 1024)
    with path.open("wb") as out:
        out.write(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2")
        written = 24
        while written < size:
            part = chunk[: size - written]
            out.write(part)
            written += len(part)


def _start_fake(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    env = os.environ | {"TMPDIR": str(workdir)}
    command = [sys.executable, "-m", "ikproxy.testing", "--port", "0", "--polls", "0"]
    command += ["--next-poll-in", "10", "--input-type", "video"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        found = re.search(r"running on (http://\S+)", line)
        if found:
            return process, found.group(1)
    process.kill()
    raise RuntimeError("the fake SCALE server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=200, help="video size in MiB (200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, interleaved (3)")
    args = parser.parse_args()
    peers = ["ikproxy run", "ikproxy put", "httpx"]
    if OFFICIAL.exists():
        peers.append("ikomia-client")
    size = args.size_mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="ikproxy-bench-") as tmp:
        workdir = Path(tmp)
        video = workdir / "video.mp4"
        _make_video(video, size)
        fake, url = _start_fake(workdir)
        try:
            best: dict[str, tuple[float, float]] = {}
            for _ in range(args.rounds):
                for name in peers:
                    growth, elapsed = _worker(name, url, video)
                    old = best.get(name)
                    best[name] = (
                        max(growth, old[0]) if old else growth,
                        min(elapsed, old[1]) if old else elapsed,
                    )
        finally:
            fake.terminate()
            fake.wait(10)
    floor_growth, floor_time = best["httpx"]
    print(f"Upload of a {args.size_mb} MiB video to the fake SCALE storage (loopback)")
    print(f"best of {args.rounds}, each upload in a fresh process\n")
    print(f"{'peer':<16}{'peak RSS growth':>18}{'throughput':>16}{'time vs httpx':>16}")
    for name in peers:
        growth, elapsed = best[name]
        rate = args.size_mb / elapsed
        ratio = elapsed / floor_time
        print(f"{name:<16}{growth:>14.1f} MiB{rate:>11.0f} MiB/s{ratio:>15.2f}x")
    if not OFFICIAL.exists():
        print(
            "\n(ikomia-client not measured: run"
            " tests/integration/tooling/test_official_client.py to make its venv)"
        )
    del floor_growth


if __name__ == "__main__":
    main()

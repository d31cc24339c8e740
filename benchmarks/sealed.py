"""Sealed run references: their cost per event, and against Fernet, side by side in one run.

    ./dev bench sealed            # or: .venv/bin/python benchmarks/sealed.py

- seal and open one reference: `ikproxy.runs.sealed.Sealer` (AES-256-GCM, the caller
  as associated data) against `cryptography`'s Fernet (AES-128-CBC and
  HMAC-SHA256, the caller folded into the plaintext), the other well-kept
  choice; and the length of the event id each gives;
- the stream: 20,000 progress events encoded as SSE with a sealed id per event
  against the same events under a plain `<token>:` prefix, to show what
  sealing adds to a run's events. The proxy seals at most once a second per
  stream (an id's expiry is to the second), so this is its worst case: a run
  whose events come a second or more apart, where a few microseconds per event
  do not show.

Times are the best of several runs, each side alternately, with the garbage
collector off.
"""

from __future__ import annotations

import gc
import hashlib
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from cryptography.fernet import Fernet

from ikproxy.proxy.stream import RunStream
from ikproxy.runs.sealed import SEALED_PREFIX, Sealer

ROUNDS = 5
REFERENCES = 20_000
EVENTS = 20_000
SECRET = b"0123456789abcdef0123456789abcdef-benchmark"
RUN = str(uuid.uuid4())
CALLER = "203.0.113.7"


def timed(function: Callable[[], object]) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        function()
        return time.perf_counter() - start
    finally:
        gc.enable()


def best_of(ours: Callable[[], object], peer: Callable[[], object]) -> tuple[float, float]:
    ours_best = peer_best = float("inf")
    for _ in range(ROUNDS):
        ours_best = min(ours_best, timed(ours))
        peer_best = min(peer_best, timed(peer))
    return ours_best, peer_best


def references() -> None:
    sealer = Sealer(SECRET)
    fernet = Fernet(Fernet.generate_key())
    expires = time.time() + 60
    caller_hash = hashlib.sha256(CALLER.encode()).digest()

    def ours() -> None:
        for _ in range(REFERENCES):
            sealer.open(sealer.seal(RUN, CALLER, expires), CALLER)

    def peer() -> None:
        plain = struct.pack(">Q", int(expires)) + caller_hash + uuid.UUID(RUN).bytes
        for _ in range(REFERENCES):
            opened = fernet.decrypt(fernet.encrypt(plain))
            if opened[8:40] != caller_hash:
                raise AssertionError

    t_ours, t_peer = best_of(ours, peer)
    ours_id = len(SEALED_PREFIX + sealer.seal(RUN, CALLER, expires) + ":12")
    peer_id = len(SEALED_PREFIX + fernet.encrypt(b"x" * 56).decode() + ":12")
    print(f"{'seal + open one reference':<34}{'ikproxy':>12}{'Fernet':>12}{'ratio':>8}")
    print(
        f"{'  references/s':<34}{REFERENCES / t_ours:>12,.0f}{REFERENCES / t_peer:>12,.0f}"
        f"{t_peer / t_ours:>7.2f}x"
    )
    print(f"{'  event id length (characters)':<34}{ours_id:>12}{peer_id:>12}")


def stream() -> None:
    sealer = Sealer(SECRET)
    results = {"uuid": RUN, "outputs": []}
    events: list[dict[str, Any]] = [
        {"state": "STARTED", "eta": [1000 - i % 1000, 1500], "run_id": "r" * 32, "uuid": RUN}
        for i in range(EVENTS - 1)
    ] + [{"state": "SUCCESS", "eta": [0, 0], "run_id": "r" * 32, "results": results}]

    def sealed_prefix() -> str:  # a seal per event: the proxy's worst case (one a second)
        return f"{SEALED_PREFIX}{sealer.seal(RUN, CALLER, time.time() + 60)}:"

    async def items() -> AsyncIterator[dict[str, Any]]:
        for event in events:
            yield event

    def encode(prefix: str | Callable[[], str]) -> Callable[[], int]:
        async def read() -> int:
            stream = RunStream(items(), keepalive=60.0, id_prefix=prefix)
            return sum([len(chunk) async for chunk in stream])

        return lambda: anyio.run(read)

    plain = "t" * 24 + ":"
    t_sealed, t_plain = best_of(encode(sealed_prefix), encode(plain))
    size_sealed, size_plain = encode(sealed_prefix)(), encode(plain)()
    print(f"{'SSE stream of progress events':<34}{'sealed id':>12}{'token id':>12}{'ratio':>8}")
    print(
        f"{'  events/s':<34}{EVENTS / t_sealed:>12,.0f}{EVENTS / t_plain:>12,.0f}"
        f"{t_plain / t_sealed:>7.2f}x"
    )
    print(f"{'  bytes per event':<34}{size_sealed / EVENTS:>12.0f}{size_plain / EVENTS:>12.0f}")


def main() -> None:
    references()
    print()
    stream()


if __name__ == "__main__":
    main()

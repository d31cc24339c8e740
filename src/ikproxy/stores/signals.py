"""Cancel requests through Redis: a web instance asks, the worker running the run hears at once.

The request is one `LPUSH` on `<prefix>:run:{<token>}:cancel` (with a TTL);
the worker waits on it with `BLPOP`, a blocking read that returns the moment
the request lands (no polling interval). A request made before the worker
started the run waits for it there, until its TTL.
"""

from __future__ import annotations

from ikproxy.stores.connections import MAX_BLOCK, LoopClients

__all__ = ["CancelSignals"]


class CancelSignals:
    """Ask for a run to stop (`request`), and wait for that request (`wait`)."""

    def __init__(self, url: str, *, prefix: str = "ikproxy", timeout: float = 1.0) -> None:
        self.prefix = prefix
        self._clients = LoopClients(url, timeout)

    def key(self, token: str) -> str:
        return f"{self.prefix}:run:{{{token}}}:cancel"

    async def request(self, token: str, *, ttl: float) -> None:
        """Ask the run's producer to stop; the request lasts `ttl` seconds."""
        key = self.key(token)
        async with (
            self._clients.guard("cancel"),
            self._clients.commands.pipeline(transaction=True) as pipe,
        ):
            pipe.lpush(key, b"1")
            pipe.pexpire(key, max(1, int(ttl * 1000)))
            await pipe.execute()

    async def wait(self, token: str, *, timeout: float = MAX_BLOCK) -> bool:
        """Wait up to `timeout` seconds (at most `MAX_BLOCK`) for a request: True if one came."""
        block = min(max(timeout, 0.001), MAX_BLOCK)
        async with self._clients.guard("cancel"):
            got = await self._clients.blocking.blpop([self.key(token)], timeout=block)
        return got is not None

    async def aclose(self) -> None:
        await self._clients.aclose()

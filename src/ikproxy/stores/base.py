"""The store interface: what ikproxy keeps outside one process, as a small async protocol.

A store backs three things: the event logs of resumable runs, rate-limit
buckets, and active-run slots; it also offers generic leases (one owner at a
time, with a TTL) for coordinating instances. Every method is a coroutine,
every value is JSON-serialisable, and every key that a store keeps has a TTL,
so that nothing an instance leaves behind when it dies lives forever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ikproxy.errors import StoreUnavailable

__all__ = ["Append", "RunInfo", "Store", "StoreUnavailable"]


@dataclass(frozen=True)
class RunInfo:
    """What a store knows of one run: its event count, whether it ended, and its metadata."""

    #: How many events the log holds (they are numbered 1..count).
    count: int
    #: Whether the terminal event is in the log.
    done: bool
    #: Whether a follower was seen within the last `touch_run` TTL.
    followed: bool
    #: The JSON metadata given to `create_run` (the request id, the producing instance...).
    meta: Mapping[str, Any] = field(default_factory=dict)


class Append(NamedTuple):
    """One run's part of `Store.append_many`: events numbered from `first`; `final` ends it."""

    run: str
    first: int
    events: Sequence[Mapping[str, Any]]
    final: bool = False


@runtime_checkable
class Store(Protocol):
    """The shared state of every instance of one proxy.

    Runs: `create_run`, `append_events`, `append_many`, `read_events`, `run_info`, `touch_run`,
    `expire_run`, `delete_run`. Events are numbered from 1 without gaps; an
    event is a JSON object. Rate limits: `acquire_token`, `refund_token`. Active-run caps:
    `acquire_slot`, `renew_slot`, `release_slot`. Leases: `acquire_lease`,
    `renew_lease`, `release_lease`, `lease_owner`. Unreachable stores raise
    `StoreUnavailable`, promptly.
    """

    #: False for a store that lives in one process (nothing to share: the proxy
    #: then keeps runs in memory only and uses its in-process rate limiter).
    shared: bool

    # -- run logs ---------------------------------------------------------------

    async def create_run(self, run: str, meta: Mapping[str, Any], *, ttl: float) -> None:
        """Create (or re-create, after a store restart) an empty run with its metadata."""

    async def append_events(
        self,
        run: str,
        first: int,
        events: Sequence[Mapping[str, Any]],
        *,
        ttl: float,
        final: bool = False,
    ) -> int:
        """Append events numbered `first`, `first + 1`... atomically; renew the run's TTL.

        Writes only if the log holds exactly `first - 1` events, and returns how
        many it holds afterwards (-1 if the run is unknown): a writer that gets
        less than it expected re-sends from there (the store lost events, say
        on a restart; -1: it re-creates the run first). With
        `final`, the last event is terminal: the run is marked done and its
        TTL becomes `ttl` for good. At most one round trip.
        """
        ...

    async def append_many(self, appends: Sequence[Append], *, ttl: float) -> list[int]:
        """`append_events` for several runs in one round trip: each run's count, in order.

        An `Append` without events renews the run's TTL (a heartbeat).
        """
        ...

    async def read_events(
        self, run: str, after: int, *, timeout: float, limit: int = 1000
    ) -> list[tuple[int, dict[str, Any]]]:
        """Up to `limit` `(number, event)` pairs after event `after`, in order.

        Waits up to `timeout` seconds for one when there are none yet; gives
        `[]` then.
        """
        ...

    async def run_info(self, run: str) -> RunInfo | None:
        """The run's count, state and metadata; None if it is unknown or has expired."""
        ...

    async def touch_run(self, run: str, *, ttl: float) -> None:
        """Record that a follower is reading the run: `followed` holds for `ttl` seconds."""

    async def expire_run(self, run: str, *, ttl: float) -> None:
        """Make every key of the run expire `ttl` seconds from now (a heartbeat, or an end)."""

    async def delete_run(self, run: str) -> None:
        """Forget the run now."""

    # -- rate limits ---------------------------------------------------------------

    async def acquire_token(self, key: str, *, rate: float, burst: int) -> float | None:
        """Take one token from `key`'s bucket (`burst` at once, `rate` per second), atomically.

        None: go; otherwise the seconds until a token is free.
        """
        ...

    async def refund_token(self, key: str, *, rate: float, burst: int) -> None:
        """Give back one token taken from `key`'s bucket (its run did not start), atomically.

        The bucket never holds more than `burst` tokens.
        """

    # -- active-run slots ----------------------------------------------------------

    async def acquire_slot(self, key: str, slot: str, *, limit: int, ttl: float) -> float | None:
        """Hold one of `key`'s `limit` slots as `slot` for `ttl` seconds (expired ones freed).

        None: held; otherwise the seconds after which one may be free.
        """
        ...

    async def renew_slot(self, key: str, slot: str, *, ttl: float) -> bool:
        """Extend a held slot to `ttl` seconds from now; False if it was lost."""
        ...

    async def release_slot(self, key: str, slot: str) -> None:
        """Free a slot (its run ended or was cancelled)."""

    # -- leases ----------------------------------------------------------------------

    async def acquire_lease(self, name: str, owner: str, *, ttl: float) -> bool:
        """Become `name`'s owner for `ttl` seconds if it has none (or is already `owner`)."""
        ...

    async def renew_lease(self, name: str, owner: str, *, ttl: float) -> bool:
        """Extend the lease if `owner` still holds it; False if it was lost."""
        ...

    async def release_lease(self, name: str, owner: str) -> None:
        """Give up the lease if `owner` holds it."""

    async def lease_owner(self, name: str) -> str | None:
        """Who holds the lease now, if anyone."""
        ...

    async def aclose(self) -> None:
        """Release the store's connections."""

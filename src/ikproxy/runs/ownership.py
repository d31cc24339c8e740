"""Run ownership: who produces a shared run, and who takes it over when that instance dies.

With a shared store, the instance that starts a resumable run holds a lease
on it (`run:<token>:owner`, `LEASE_TTL` seconds) and renews it every
`RENEW_EVERY` seconds while it reads the upstream. If the instance dies, the
lease lapses within `LEASE_TTL`. A follower on another instance checks the
lease every `CHECK_EVERY` seconds while it waits for events; when it has
found none for `GRACE` seconds (time enough for a living owner to take its
lease again after a store restart lost it), its instance takes the lease and
then:

* if the deployment `SupportsAttach` and the run's upstream id is known (the
  `uuid` of its first logged event), it attaches to the upstream run and
  appends what follows to the same log, so every follower gets the result;
* otherwise (a local run: the work died with its process) it ends the log with
  a terminal `run_lost` error, which every follower gets.

So a follower learns of its producer's death within `TAKEOVER_BOUND` seconds.
An owner whose lease went to another instance (it could not reach the store
for longer than the lease, while that instance could) stops producing, so a
run never has two writers for long, and the store's numbered appends keep its
log free of gaps and doubles. The followers on that owner then get
`run_lost`; they may resume through any other instance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Final

import anyio

from ikproxy.model import Progress
from ikproxy.redaction import fingerprint
from ikproxy.stores import RunInfo, Store, StoreUnavailable
from ikproxy.telemetry import Telemetry, default_telemetry

__all__ = [
    "CHECK_EVERY",
    "GRACE",
    "LEASE_TTL",
    "LOST",
    "RENEW_EVERY",
    "TAKEOVER_BOUND",
    "OwnerLease",
    "Takeover",
    "lease_name",
    "upstream_uuid",
]

logger = logging.getLogger("ikproxy")

#: Seconds a run's owner lease lasts without renewal.
LEASE_TTL: Final = 5.0
#: Seconds between two renewals by the owner (well under `LEASE_TTL`: two may fail).
RENEW_EVERY: Final = 1.5
#: Seconds between two checks of the lease by a waiting follower.
CHECK_EVERY: Final = 1.0
#: Seconds a lease must be seen vacant before it is taken: two renewals of a living owner.
GRACE: Final = 2 * RENEW_EVERY
#: The longest a follower waits, after its run's owner died, before the run goes on or
#: ends with `run_lost`: the lease's TTL, a check interval, the grace, and a margin.
TAKEOVER_BOUND: Final = LEASE_TTL + CHECK_EVERY + GRACE + 1.0

_MAX_WATCHED = 10_000

#: The terminal event logged for a run whose work died with its instance.
LOST: Final = {"error": "run_lost"}


def lease_name(token: str) -> str:
    """The store lease that names a run's producing instance."""
    return f"run:{token}:owner"


def upstream_uuid(events: Sequence[Mapping[str, Any]]) -> str | None:
    """The deployment's id of a run, from its logged events (every SCALE progress has it)."""
    for event in events:
        uuid = event.get("uuid")
        if isinstance(uuid, str) and uuid:
            return uuid
    return None


class OwnerLease:
    """The lease of one run's producer: taken, renewed while the run is read, released."""

    def __init__(
        self,
        store: Store,
        token: str,
        owner: str,
        *,
        ttl: float = LEASE_TTL,
        every: float = RENEW_EVERY,
    ) -> None:
        if not 0 < every < ttl:
            raise ValueError("a lease must be renewed more often than it lasts")
        self.store = store
        self.token = token
        self.name = lease_name(token)
        self.owner = owner
        self.ttl = ttl
        self.every = every
        self._keeper: asyncio.Task[None] | None = None

    async def acquire(self) -> bool:
        """Become the run's owner, unless another instance is; False then."""
        return await self.store.acquire_lease(self.name, self.owner, ttl=self.ttl)

    def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew the lease in the background until `release`; `on_lost()` if it is lost.

        It is lost only when another instance holds it: a lease that vanished
        (a store restarted without its data) is taken again, and while the store
        cannot be reached nobody else can take it either.
        """
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(self._renew(on_lost))

    async def _renew(self, on_lost: Callable[[], None]) -> None:
        while True:
            await anyio.sleep(self.every)
            try:
                held = await self.store.renew_lease(self.name, self.owner, ttl=self.ttl)
                if not held:
                    # Vacant (the store lost it, or it lapsed): ours again unless taken.
                    held = await self.acquire()
            except StoreUnavailable as exc:
                logger.warning(
                    "run lease renewal failed [run=%s]: %s", fingerprint(self.token), exc
                )
                continue
            if not held:
                logger.error("another instance took over a run [run=%s]", fingerprint(self.token))
                on_lost()
                return

    async def release(self) -> None:
        """Stop renewing and give the lease up (never raises: a lapsed lease is as good)."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
            try:
                await self.store.release_lease(self.name, self.owner)
            except StoreUnavailable:
                pass


#: `attach(uuid)`: the upstream run's progress from now on (a `SupportsAttach` deployment).
Attach = Callable[[str], AsyncIterator[Progress]]

#: `adopt(token, logged, stream, info)`: produce the run here from `stream` on, after its
#: `logged` events, as the owner of its lease (taken by this instance's name).
Adopt = Callable[[str, list[dict[str, Any]], AsyncIterator[Progress], RunInfo], object]


class Takeover:
    """What an instance does for a followed run whose owner is gone: go on, or end it lost.

    `check(token, info)` is called by a follower that waits for events of a
    run that is not done. Cheap while the owner lives (one lease read); when
    the lease has lapsed, the first instance to take it either attaches to
    the upstream run (`attach`, when the deployment can and the logged events
    name the upstream id) and hands it to `adopt`, or logs `LOST` as the run's
    terminal event.
    """

    def __init__(
        self,
        store: Store,
        instance: str,
        *,
        attach: Attach | None,
        adopt: Adopt,
        ttl: float,
        grace: float = GRACE,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.store = store
        self.instance = instance
        self.attach = attach
        self.adopt = adopt
        self.ttl = ttl
        self.grace = grace
        self.clock: Callable[[], float] = time.monotonic
        self._vacant: dict[str, float] = {}  # token: when its lease was first seen vacant
        self._taking: set[str] = set()
        #: Counts the runs taken over and lost (`ikproxy.resumes`).
        self.telemetry = telemetry or default_telemetry()

    async def check(self, token: str, info: RunInfo) -> bool:
        """Take the run over if its owner's lease has been vacant for `grace` (no-op otherwise).

        True when this call took it over to go on with it here.
        """
        if info.done or await self.store.lease_owner(lease_name(token)) is not None:
            self._vacant.pop(token, None)
            return False
        now = self.clock()
        if len(self._vacant) >= _MAX_WATCHED:
            self._vacant.clear()  # bounded memory; a check or two more is the price
        since = self._vacant.setdefault(token, now)
        if now - since < self.grace:
            return False
        del self._vacant[token]
        if token in self._taking:
            return False  # another follower here is taking it
        self._taking.add(token)
        try:
            return await self._take(token)
        finally:
            self._taking.discard(token)

    async def _take(self, token: str) -> bool:
        lease = OwnerLease(self.store, token, self.instance)
        if not await lease.acquire():
            return False  # another instance took it first
        try:
            current = await self.store.run_info(token)
            if current is None or current.done:
                await lease.release()
                return False
            logged = await self.store.read_events(
                token, 0, timeout=0.001, limit=max(current.count, 1)
            )
            events = [event for _, event in logged[: current.count]]
            uuid = upstream_uuid(events)
            if self.attach is not None and uuid is not None:
                logger.warning("taking over a run whose owner is gone [run=%s]", fingerprint(token))
                self.adopt(token, events, self.attach(uuid), current)
                self.telemetry.resumes.add(1, {"outcome": "taken_over"})
                return True
            logger.error("a run was lost with its owner [run=%s]", fingerprint(token))
            await self._end_lost(token, current)
            self.telemetry.resumes.add(1, {"outcome": "lost"})
        except BaseException:
            await lease.release()
            raise
        await lease.release()
        return False

    async def _end_lost(self, token: str, info: RunInfo) -> None:
        """Log `LOST` as the run's terminal event, after whatever it holds now."""
        count = info.count
        for _ in range(3):
            written = await self.store.append_events(
                token, count + 1, [LOST], ttl=self.ttl, final=True
            )
            if written in (-1, count + 1):
                return
            current = await self.store.run_info(token)  # another writer got there first
            if current is None or current.done:
                return
            count = current.count

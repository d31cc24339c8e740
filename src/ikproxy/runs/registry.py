"""Resumable runs: a run whose events outlive the connection that started it.

With `Policy(resume_window=60)`, each run is read by a task of its own and its
events are kept; every event id is `<token>:<n>`, where the token is long and
random. A client that lost its connection sends the last id it saw as
`Last-Event-ID` (a browser's `EventSource` does so by itself) and gets the
events after it, then the live ones. A run with no client for `resume_window`
seconds is stopped; a finished run is forgotten `resume_window` seconds after
its end.

The producer (`SharedRun`) lives on the instance that started the run and
keeps its events in memory for the followers there. With a shared store
(`ikproxy.stores.RedisStore`) it also writes them to the store through a
`RunLog` (see `ikproxy.runs.log`), so that a follower on any instance reads
them (`StoredRun`); each follower renews a "followed" mark in the store, so
that a run followed from another instance is not stopped as abandoned.
Without one, runs live in the memory of one process and resume needs that
process. The producing instance holds a lease on its run; when it dies, an
instance with a follower takes the run over or ends it with `run_lost` (see
`ikproxy.ownership`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import anyio

from ikproxy.concurrency import aclose, deadline
from ikproxy.errors import IkproxyError, UpstreamError, WorkflowFailed, error_code
from ikproxy.model import Progress, State, StreamItem
from ikproxy.redaction import fingerprint
from ikproxy.runs.log import LogWriter, RunLog
from ikproxy.runs.ownership import CHECK_EVERY, Attach, OwnerLease, Takeover
from ikproxy.stores import MemoryStore, RunInfo, Store, StoreUnavailable
from ikproxy.telemetry import Telemetry

__all__ = ["LogWriter", "RunLog", "RunRegistry", "SharedRun", "StoredRun"]

logger = logging.getLogger("ikproxy")

#: The longest a follower waits on the store before it checks on the run again.
_POLL = 5.0


class _Failed(IkproxyError):
    """A run's terminal error, replayed to each client that follows it (logged once)."""

    logged = True

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _TooManyEvents(IkproxyError):
    """A run sent more events than a log keeps."""


class ReadEvents(Protocol):
    """`Store.read_events`'s signature: the events of `run` after `after`, waiting a while."""

    async def __call__(
        self, run: str, after: int, *, timeout: float, limit: int = 1000
    ) -> list[tuple[int, dict[str, Any]]]: ...


class Followable(Protocol):
    """A run a client can follow: its token, its event count, and its events after `after`."""

    token: str

    @property
    def count(self) -> int: ...

    def resume_point(self, seen: int) -> int:
        """Where a client that saw `seen` events resumes (never past the run's end)."""
        ...

    def follow(self, after: int = 0) -> AsyncIterator[dict[str, Any]]: ...


class SharedRun:
    """One run read by a task of its own, with every event kept for its followers."""

    def __init__(
        self,
        registry: RunRegistry,
        token: str,
        stream: AsyncIterator[StreamItem],
        *,
        request_id: str,
        timeout: float | None,
        log: RunLog | None = None,
        items: list[dict[str, Any]] | None = None,
        remote: bool = False,
    ) -> None:
        self.token = token
        self.request_id = request_id
        #: The digest of the caller the run is bound to (`caller_digest`), or None: unbound.
        self.caller: str | None = None
        #: The run's events; `items` are those it had before (a run taken over).
        self.items: list[dict[str, Any]] = list(items or ())
        self.failure: _Failed | None = None
        self.done = False
        self.followers = 0
        #: The run's store log, when the store is shared.
        self.log = log
        #: Whether the run's producer is elsewhere (a worker): it writes the log and holds
        #: the lease; this run only reads its stream (a follower of that log) for the
        #: followers here, and stops it when nobody follows it anywhere.
        self.remote = remote
        #: Set once the run has ended and its every event is in the store.
        self.flushed = asyncio.Event()
        self._registry = registry
        self._changed = asyncio.Event()
        self._expiry: asyncio.TimerHandle | None = None
        self._checking: asyncio.Task[None] | None = None
        self._task = asyncio.get_running_loop().create_task(self._produce(stream, timeout))
        #: Set when another instance took the run over: this one writes it no more.
        self.disowned = False
        self._owner = (
            asyncio.get_running_loop().create_task(self._own(log))
            if log is not None and not remote
            else None
        )

    @property
    def count(self) -> int:
        return len(self.items)

    def resume_point(self, seen: int) -> int:
        return min(seen, len(self.items))

    async def _own(self, log: RunLog) -> None:
        """Hold the run's lease in the store until its every event is there."""
        lease = OwnerLease(log.store, self.token, self._registry.instance)
        try:
            try:
                held = await lease.acquire()
            except StoreUnavailable:
                held = True  # the renewals will tell
            if not held:
                self._lose()
                return
            lease.keep(self._lose)
            await self.flushed.wait()
        finally:
            await lease.release()

    def _lose(self) -> None:
        """The lease went to another instance: stop, and leave the run's log to it."""
        if self.flushed.is_set():
            return
        self.disowned = True
        self._registry.writer.drop(self.token)
        if not self.done:
            self.failure = _Failed("run_lost")
            self._task.cancel()

    async def _produce(self, stream: AsyncIterator[StreamItem], timeout: float | None) -> None:
        try:
            with deadline(timeout):
                async for item in stream:
                    obj = item.to_json() if isinstance(item, Progress) else dict(item)
                    if obj.get("state") == State.FAILURE:
                        raise WorkflowFailed("the upstream reported a FAILURE state")
                    if len(self.items) >= self._registry.max_events:
                        raise _TooManyEvents(f"more than {self._registry.max_events} events")
                    self.items.append(obj)
                    self._notify()
                    if obj.get("results") is not None:
                        break
                else:
                    raise UpstreamError("the run ended without results")
        except Exception as exc:
            code = error_code(exc)
            logger.error("run failed [request_id=%s code=%s]", self.request_id, code, exc_info=exc)
            self.failure = _Failed(code)
        finally:
            with anyio.CancelScope(shield=True):
                await aclose(stream)
            self.done = True
            self._notify()
            self._expire_later()
            if self.log is None or self.remote:
                self.flushed.set()

    def log_events(self) -> list[dict[str, Any]]:
        """The events as logged in the store: the items, then the failure if any."""
        if self.done and self.failure is not None:
            return [*self.items, {"error": self.failure.code}]
        return self.items

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self.log is not None and not self.remote:
            self._registry.writer.mark(self)

    def _expire_later(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(self._registry.window, self._expire)

    def _expire(self) -> None:
        """Forget the run; stop it first if it is still going (nobody followed it in time)."""
        self._expiry = None
        if not self.done:
            if self.followers:
                return
            if self.log is not None:
                loop = asyncio.get_running_loop()
                self._checking = loop.create_task(self._expire_unless_followed())
                return
            self._task.cancel()
        self._forget()

    async def _expire_unless_followed(self) -> None:
        """Stop the run unless a follower on another instance read it within the window."""
        assert self.log is not None
        store = self.log.store
        try:
            info = await store.run_info(self.token)
        except StoreUnavailable:
            info = None  # nobody can follow it from elsewhere now
        if self.done or self.followers:
            return
        if info is not None and info.followed:
            self._expire_later()
            return
        # Gone from the store first: once the run is stopped, no instance resumes it.
        with anyio.move_on_after(2):
            try:
                await store.delete_run(self.token)
            except StoreUnavailable:
                pass
        self._task.cancel()
        self._forget()

    def _forget(self) -> None:
        if self._owner is not None and self.done:
            self._owner.cancel()
        self._registry.forget(self.token)

    async def follow(self, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The events after the first `after`, then the live ones; the failure, raised last."""
        self.followers += 1
        if self._expiry is not None and not self.done:
            self._expiry.cancel()
            self._expiry = None
        try:
            index = after
            while True:
                while index < len(self.items):
                    yield self.items[index]
                    index += 1
                if self.done:
                    if self.failure is not None:
                        raise self.failure
                    return
                await self._changed.wait()
        finally:
            self.followers -= 1
            if not self.followers and not self.done:
                self._expire_later()

    def cancel(self) -> None:
        self._task.cancel()

    async def written(self) -> None:
        """Wait until the run has ended and its every event is in the store."""
        await self.flushed.wait()


class StoredRun:
    """A run produced on another instance, followed through the store."""

    def __init__(
        self,
        store: Store,
        token: str,
        info: RunInfo,
        window: float,
        takeover: Takeover | None = None,
        *,
        mark_followed: bool = True,
        read: ReadEvents | None = None,
    ) -> None:
        self.store = store
        self.token = token
        self.window = window
        self.info = info
        #: What to do when the run's owner is gone (checked while waiting for events).
        self.takeover = takeover
        #: Whether reading marks the run followed (a client's reading does; the reading
        #: of the instance that streams a worker's run to its own followers does not).
        self.mark_followed = mark_followed
        #: How the events are read: the store's `read_events`, or a reader sharing one
        #: connection among the followers of an instance (`ikproxy.stores.tail`).
        self.read = read or store.read_events
        #: Whether this instance took the run over while following it.
        self.taken_over = False

    @property
    def count(self) -> int:
        return self.info.count

    def resume_point(self, seen: int) -> int:
        # While the run goes on, its producer may have sent a client events the
        # store has not got yet: those come, so the client's count stands.
        return min(seen, self.info.count) if self.info.done else seen

    async def follow(self, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The events after `after` from the store, then the live ones, in order.

        While the store is unreachable the follower waits (its client gets
        keepalives) and reads on where it was; after `window` seconds without
        the store, or without the run in it, it ends with `store_unavailable`.
        """
        store, window = self.store, self.window
        trouble_since: float | None = None
        backoff = 0.05
        # The "followed" mark is renewed by a task of its own, so that a client
        # slow to read does not let the run be stopped as abandoned.
        keeper = (
            asyncio.get_running_loop().create_task(self._keep_followed())
            if self.mark_followed
            else None
        )
        try:
            while True:
                now = time.monotonic()
                try:
                    poll = _POLL if self.takeover is None else CHECK_EVERY
                    wait = min(window / 3, poll)
                    events = await self.read(self.token, after, timeout=wait)
                    if not events:
                        info = await store.run_info(self.token)
                        if info is None:
                            raise StoreUnavailable("the run is no longer in the store")
                        if info.done and after > info.count:
                            # The client saw events its dead owner never stored: the
                            # terminal event came after them.
                            after = max(info.count - 1, 0)
                            events = await store.read_events(
                                self.token, after, timeout=0.001, limit=1
                            )
                        elif info.done and after >= info.count:
                            return
                        elif self.takeover is not None and await self.takeover.check(
                            self.token, info
                        ):
                            self.taken_over = True
                except StoreUnavailable as exc:
                    trouble_since = trouble_since or now
                    if now - trouble_since > window:
                        logger.error(
                            "lost a followed run [run=%s]: %s", fingerprint(self.token), exc
                        )
                        raise _Failed("store_unavailable") from None
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                trouble_since, backoff = None, 0.05
                for number, event in events:
                    if number != after + 1:
                        continue
                    after = number
                    if "error" in event:
                        raise _Failed(str(event["error"]))
                    yield event
                    if event.get("results") is not None:
                        return
        finally:
            if keeper is not None:
                keeper.cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    try:
                        await store.touch_run(self.token, ttl=window)
                    except StoreUnavailable:
                        pass

    async def _keep_followed(self) -> None:
        """Mark the run followed now and every third of the window, while the follower reads."""
        while True:
            try:
                await self.store.touch_run(self.token, ttl=self.window)
            except StoreUnavailable as exc:
                logger.warning(
                    "could not mark a run followed [run=%s]: %s", fingerprint(self.token), exc
                )
            await anyio.sleep(min(self.window / 3, _POLL))


class RunRegistry:
    """The resumable runs of one proxy, by token; bounded in number and in events per run.

    Runs started here are kept in memory; with a shared `store`, their events
    are also written to it and runs started elsewhere are followed from it.
    """

    def __init__(
        self,
        window: float,
        max_runs: int = 10_000,
        *,
        store: Store | None = None,
        max_events: int = 10_000,
        attach: Attach | None = None,
        bind_callers: bool = False,
        telemetry: Telemetry | None = None,
    ) -> None:
        if window <= 0:
            raise ValueError("resume_window must be a positive number of seconds")
        self.window = window
        #: Whether a run is bound to the caller that started it (the `caller` of `create`
        #: and `start`): resumed by that caller only. Set when the policy names its callers.
        self.bind_callers = bind_callers
        self.max_runs = max_runs
        self.max_events = max_events
        self.store: Store = store if store is not None else MemoryStore()
        #: Who produces runs here, as recorded in the store's metadata.
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        #: Writes the events of this registry's runs to a shared store.
        self.writer = LogWriter(self.store, window)
        self._runs: dict[str, SharedRun] = {}
        #: Takes over the followed runs whose owner died, with a shared store. `attach`
        #: (a `SupportsAttach` deployment's) lets it go on with those it can follow upstream.
        self.takeover = (
            Takeover(
                self.store,
                self.instance,
                attach=attach,
                adopt=self.adopt,
                ttl=window,
                telemetry=telemetry,
            )
            if self.store.shared
            else None
        )

    def __len__(self) -> int:
        return len(self._runs)

    async def create(self, *, request_id: str, caller: str | None = None) -> RunLog | None:
        """A new run's token and store log, created before the run is submitted.

        None without a shared store (the token is made by `start`). Raises
        `StoreUnavailable` when the store cannot take it. With `caller`, the run
        is bound to it (its digest is kept): see `find`.
        """
        if not self.store.shared:
            return None
        token = secrets.token_urlsafe(18)
        meta = {"request_id": request_id, "instance": self.instance}
        if self.bind_callers and caller is not None:
            meta["caller"] = caller_digest(caller)
        log = RunLog(self.store, token, meta, self.window)
        await log.create()
        return log

    def start(
        self,
        stream: AsyncIterator[StreamItem],
        *,
        request_id: str,
        timeout: float | None,
        log: RunLog | None = None,
        remote: bool = False,
        caller: str | None = None,
    ) -> SharedRun:
        """Read `stream` in a task of its own and keep its events under a new token, bound to
        `caller` when given (see `find`).

        `remote`: the run's producer writes `log` itself (see `SharedRun.remote`).
        """
        while len(self._runs) >= self.max_runs:
            # Memory stays bounded: the oldest run is stopped and forgotten.
            oldest = next(iter(self._runs))
            self._runs.pop(oldest).cancel()
        token = log.token if log is not None else secrets.token_urlsafe(18)
        run = SharedRun(
            self, token, stream, request_id=request_id, timeout=timeout, log=log, remote=remote
        )
        run.caller = caller_digest(caller) if self.bind_callers and caller is not None else None
        self._runs[token] = run
        return run

    def get(self, token: str) -> SharedRun | None:
        """A run started by this instance."""
        return self._runs.get(token)

    async def find(self, token: str, caller: str | None = None) -> Followable | None:
        """A run started here or, with a shared store, anywhere; None if unknown or expired,
        or bound to another caller than `caller` (the same None: no oracle)."""
        run = self._runs.get(token)
        if run is not None or not self.store.shared:
            return run if run is not None and _same_caller(run.caller, caller) else None
        info = await self.store.run_info(token)
        if info is None or not _same_caller(info.meta.get("caller"), caller):
            return None
        return StoredRun(self.store, token, info, self.window, self.takeover)

    def adopt(
        self,
        token: str,
        events: list[dict[str, Any]],
        stream: AsyncIterator[StreamItem],
        info: RunInfo,
    ) -> SharedRun:
        """Produce here a run taken over from a dead owner: its `events`, then `stream`'s."""
        log = RunLog(self.store, token, info.meta, self.window)
        log.written = len(events)
        request_id = str(info.meta.get("request_id") or "")
        run = SharedRun(
            self, token, stream, request_id=request_id, timeout=None, log=log, items=events
        )
        caller = info.meta.get("caller")
        run.caller = caller if isinstance(caller, str) else None
        self._runs[token] = run
        return run

    def forget(self, token: str) -> None:
        self._runs.pop(token, None)
        self.writer.drop(token)


def caller_digest(caller: str) -> str:
    """What binds a run to its caller: a SHA-256 of the caller's key (never the key itself,
    which may be an account name or an address)."""
    return hashlib.sha256(
        b"ikproxy run caller\x00" + caller.encode("utf-8", "surrogatepass")
    ).hexdigest()


def _same_caller(bound: object, caller: str | None) -> bool:
    """Whether a run bound to `bound` (a digest, or None: unbound) may be resumed by `caller`."""
    if bound is None:
        return True
    return caller is not None and hmac.compare_digest(str(bound), caller_digest(caller))

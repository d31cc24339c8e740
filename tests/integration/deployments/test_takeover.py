"""Run ownership: the producing instance holds a lease; when it dies, another instance takes over.

The lease itself is tested on a `MemoryStore`; the takeover with real
processes: two uvicorn servers of one app sharing a real redis-server, and the
fake SCALE server on loopback. The owner of a run is killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx
import pytest

from ikproxy import IkproxyError, Progress, Results
from ikproxy.codecs.sse import ServerSentEvent, SSEDecoder
from ikproxy.protocol import parse_position
from ikproxy.runs.ownership import (
    LOST,
    TAKEOVER_BOUND,
    OwnerLease,
    Takeover,
    lease_name,
    upstream_uuid,
)
from ikproxy.runs.registry import RunRegistry
from ikproxy.stores import MemoryStore, RedisStore
from tests.support.servers import ROOT, free_port, running_server

# -- the lease ------------------------------------------------------------------------------


def test_lease_name_and_upstream_uuid() -> None:
    assert lease_name("tok") == "run:tok:owner"
    assert upstream_uuid([{"state": "PENDING", "uuid": None}, {"uuid": "u-1"}]) == "u-1"
    assert upstream_uuid([{"state": "PENDING"}]) is None
    with pytest.raises(ValueError, match="renewed more often"):
        OwnerLease(MemoryStore(), "tok", "a", ttl=1.0, every=1.0)


@pytest.mark.anyio
async def test_one_owner_at_a_time_until_it_releases() -> None:
    store = MemoryStore()
    first, second = OwnerLease(store, "tok", "a"), OwnerLease(store, "tok", "b")
    assert await first.acquire()
    assert await first.acquire()  # the owner again
    assert not await second.acquire()
    assert await store.lease_owner(lease_name("tok")) == "a"
    await first.release()
    assert await store.lease_owner(lease_name("tok")) is None
    assert await second.acquire()


class _Clocked(MemoryStore):
    """A memory store on a clock the test moves, which tells when a lease was renewed."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.clock = lambda: self.now
        self.renewed = asyncio.Event()
        self.acquired = asyncio.Event()

    async def renew_lease(self, name: str, owner: str, *, ttl: float) -> bool:
        held = await super().renew_lease(name, owner, ttl=ttl)
        self.renewed.set()
        return held

    async def acquire_lease(self, name: str, owner: str, *, ttl: float) -> bool:
        held = await super().acquire_lease(name, owner, ttl=ttl)
        self.acquired.set()
        return held


@pytest.mark.anyio
async def test_a_kept_lease_outlives_its_ttl_and_lapses_once_no_longer_renewed() -> None:
    store = _Clocked()
    lease = OwnerLease(store, "tok", "a", ttl=5.0, every=0.01)
    other = OwnerLease(store, "tok", "b")
    assert await lease.acquire()
    lost = asyncio.Event()
    lease.keep(lost.set)
    for _ in range(10):  # ten times its TTL, in steps of most of it
        store.now += 4.0
        store.renewed.clear()
        await asyncio.wait_for(store.renewed.wait(), 2.0)
        assert not await other.acquire()
    assert not lost.is_set()
    # Renewals stop (as in a killed process): the lease lapses at its TTL, not before.
    assert lease._keeper is not None
    lease._keeper.cancel()
    store.now += 4.9
    assert not await other.acquire()
    store.now += 0.1
    assert await other.acquire()


@pytest.mark.anyio
async def test_an_owner_whose_lease_was_taken_learns_it() -> None:
    store = MemoryStore()
    lease = OwnerLease(store, "tok", "a", ttl=0.5, every=0.05)
    assert await lease.acquire()
    lost = asyncio.Event()
    lease.keep(lost.set)
    await store.release_lease(lease.name, "a")
    assert await store.acquire_lease(lease.name, "b", ttl=5.0)
    await asyncio.wait_for(lost.wait(), 2.0)
    await lease.release()
    assert await store.lease_owner(lease.name) == "b"  # never released by a former owner


@pytest.mark.anyio
async def test_a_lease_the_store_lost_is_taken_again_by_its_living_owner() -> None:
    store = _Clocked()
    lease = OwnerLease(store, "tok", "a", ttl=5.0, every=0.01)
    assert await lease.acquire()
    lost = asyncio.Event()
    lease.keep(lost.set)
    await store.release_lease(lease.name, "a")  # as a store restarted without its data
    store.acquired.clear()
    await asyncio.wait_for(store.acquired.wait(), 2.0)
    assert await store.lease_owner(lease.name) == "a"
    assert not lost.is_set()
    await lease.release()


# -- the takeover decision ----------------------------------------------------------------------


async def _orphan(store: MemoryStore, token: str, events: list[dict[str, Any]]) -> None:
    """A run whose producer logged `events` and then died: its lease lapsed."""
    await store.create_run(token, {"request_id": "r"}, ttl=30.0)
    assert await store.append_events(token, 1, events, ttl=30.0) == len(events)


class _Adoptions:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.attached: list[str] = []

    def attach(self, uuid: str) -> Any:
        self.attached.append(uuid)
        return iter(())  # never iterated here

    def adopt(self, *args: Any) -> None:
        self.calls.append(args)


class _Yielding(MemoryStore):
    """A memory store whose every lease call lets other tasks run, as a network store does."""

    async def lease_owner(self, name: str) -> str | None:
        await asyncio.sleep(0)
        return await super().lease_owner(name)

    async def acquire_lease(self, name: str, owner: str, *, ttl: float) -> bool:
        await asyncio.sleep(0)
        return await super().acquire_lease(name, owner, ttl=ttl)


@pytest.mark.anyio
async def test_a_scale_run_is_adopted_by_the_first_instance_that_checks() -> None:
    store = _Yielding()
    logged = [{"state": "PENDING", "uuid": "up-1"}, {"state": "STARTED", "uuid": "up-1"}]
    await _orphan(store, "tok", logged)
    b, c = _Adoptions(), _Adoptions()
    on_b = Takeover(store, "b", attach=b.attach, adopt=b.adopt, ttl=30.0, grace=0)
    on_c = Takeover(store, "c", attach=c.attach, adopt=c.adopt, ttl=30.0, grace=0)
    info = await store.run_info("tok")
    assert info is not None
    # Two followers on B and one on C, at once.
    await asyncio.gather(on_b.check("tok", info), on_b.check("tok", info), on_c.check("tok", info))
    adopted = b.calls + c.calls
    assert len(adopted) == 1
    token, events, _stream, current = adopted[0]
    assert (token, events, current.count) == ("tok", logged, 2)
    assert b.attached + c.attached == ["up-1"]
    owner = "b" if b.calls else "c"
    assert await store.lease_owner(lease_name("tok")) == owner  # kept for the producer
    # While it holds the lease, nobody else acts.
    await on_c.check("tok", info)
    await on_b.check("tok", info)
    assert len(b.calls + c.calls) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("can_attach", [False, True])
async def test_a_run_without_an_upstream_to_attach_to_ends_lost(can_attach: bool) -> None:
    store = MemoryStore()
    await _orphan(store, "tok", [{"state": "STARTED", "uuid": None, "fraction": 0.1}])
    spy = _Adoptions()
    takeover = Takeover(
        store, "b", attach=spy.attach if can_attach else None, adopt=spy.adopt, ttl=30.0, grace=0
    )
    info = await store.run_info("tok")
    assert info is not None
    await takeover.check("tok", info)
    assert spy.calls == []
    after = await store.run_info("tok")
    assert after is not None
    assert (after.count, after.done) == (2, True)
    assert await store.read_events("tok", 1, timeout=0.01) == [(2, LOST)]
    assert await store.lease_owner(lease_name("tok")) is None


@pytest.mark.anyio
async def test_a_vacant_lease_is_taken_only_after_the_grace() -> None:
    store = MemoryStore()
    await _orphan(store, "tok", [{"state": "STARTED", "uuid": "up-1"}])
    spy = _Adoptions()
    takeover = Takeover(store, "b", attach=spy.attach, adopt=spy.adopt, ttl=30.0, grace=3.0)
    now = 100.0
    takeover.clock = lambda: now
    info = await store.run_info("tok")
    assert info is not None
    await takeover.check("tok", info)  # first seen vacant
    now += 2.9
    await takeover.check("tok", info)
    assert spy.calls == []
    # The owner came back meanwhile (a store restart): the count starts again.
    assert await OwnerLease(store, "tok", "a").acquire()
    await takeover.check("tok", info)
    await store.release_lease(lease_name("tok"), "a")
    now += 1.0
    await takeover.check("tok", info)
    now += 2.9
    await takeover.check("tok", info)
    assert spy.calls == []
    now += 0.1
    await takeover.check("tok", info)
    assert len(spy.calls) == 1


@pytest.mark.anyio
async def test_nothing_is_taken_while_the_owner_lives_or_once_the_run_is_done() -> None:
    store = MemoryStore()
    await _orphan(store, "tok", [{"state": "STARTED", "uuid": "up-1"}])
    spy = _Adoptions()
    takeover = Takeover(store, "b", attach=spy.attach, adopt=spy.adopt, ttl=30.0, grace=0)
    assert await OwnerLease(store, "tok", "a").acquire()
    info = await store.run_info("tok")
    assert info is not None
    await takeover.check("tok", info)
    assert spy.calls == []
    await store.release_lease(lease_name("tok"), "a")
    await store.append_events("tok", 2, [{"state": "SUCCESS", "results": {}}], ttl=5, final=True)
    done = await store.run_info("tok")
    assert done is not None
    await takeover.check("tok", info)  # a stale view of the run: it is done now
    await takeover.check("tok", done)
    assert spy.calls == []
    assert await store.lease_owner(lease_name("tok")) is None


# -- real processes: the owner of a run is killed ---------------------------------------------


@contextmanager
def _instance(
    redis_url: str | None, prefix: str, scale_url: str | None, secret: str | None = None
) -> Iterator[tuple[Any, str]]:
    """One uvicorn process serving tests/support/takeover_app.py; yields (process, base URL)."""
    port = free_port()
    env = {
        "PYTHONPATH": str(ROOT),
        "IKPROXY_TEST_REDIS": redis_url,
        "IKPROXY_TEST_PREFIX": prefix,
        "IKPROXY_TEST_SCALE": scale_url,
        "IKPROXY_TEST_SECRET": secret,
    }
    args = ["-m", "uvicorn", "tests.support.takeover_app:app", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--no-access-log", "--lifespan", "off"]
    with running_server(args, ready="Uvicorn running on", env=env) as proc:
        yield proc, f"http://127.0.0.1:{port}"


@contextmanager
def _fake_scale() -> Iterator[str]:
    """The fake SCALE server in a process of its own: runs done after 12 polls 100 ms apart."""
    port = free_port()
    args = ["-m", "ikproxy.testing", "--port", str(port), "--polls", "12", "--next-poll-in", "100"]
    with running_server(args, ready="Fake Ikomia SCALE server running"):
        yield f"http://127.0.0.1:{port}"


def _stored(redis_url: str, prefix: str, last_id: str) -> None:
    """Wait until the store holds the events up to `last_id` (the owner writes them behind)."""
    token, count = parse_position(last_id) or ("", 0)

    async def wait() -> None:
        store = RedisStore(redis_url, prefix=prefix)
        try:
            with anyio.fail_after(10):
                while True:
                    info = await store.run_info(token)
                    if info is not None and info.count >= count:
                        return
                    await store.read_events(token, count - 1, timeout=0.2)
        finally:
            await store.aclose()

    anyio.run(wait)


def _kill(proc: Any) -> float:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return time.monotonic()


def _read_until(response: httpx.Response, count: int) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    chunks = response.iter_bytes()
    while len(events) < count:
        events += decoder.feed(next(chunks))
    return events


def _resume(base: str, last_id: str) -> Iterator[tuple[float, ServerSentEvent]]:
    """The events of a resumed stream, each with the time it arrived."""
    decoder = SSEDecoder()
    # Nothing for longer than the bound (keepalives come every 15 s) is a failure, not a hang.
    timeout = httpx.Timeout(5.0, read=TAKEOVER_BOUND + 5.0)
    with httpx.stream(
        "GET", f"{base}/run", headers={"Last-Event-ID": last_id}, timeout=timeout
    ) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            for event in decoder.feed(chunk):
                yield time.monotonic(), event


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(4)}"


def test_a_scale_run_whose_owner_was_killed_completes_through_another_instance(
    redis_url: str, prefix: str
) -> None:
    with (
        _fake_scale() as scale,
        _instance(redis_url, prefix, scale) as (a, a_url),
        _instance(redis_url, prefix, scale) as (_, b_url),
    ):
        with httpx.stream("GET", f"{a_url}/run", params={"prompt": "x"}) as response:
            assert response.status_code == 200
            seen = _read_until(response, 2)
            _stored(redis_url, prefix, seen[-1].id or "")
            killed = _kill(a)
        token, count = parse_position(seen[-1].id or "") or ("", 0)
        first = json.loads(seen[0].data)
        rest = list(_resume(b_url, seen[-1].id or ""))
    events = [event for _, event in rest]
    assert events[-1].event == "result", [e.data for e in events]
    assert all(e.event == "progress" for e in events[:-1])
    numbers = [parse_position(e.id or "") for e in events]
    assert numbers == [(token, n) for n in range(count + 1, count + 1 + len(events))]
    final = json.loads(events[-1].data)
    assert final["uuid"] == first["uuid"]  # the same upstream run, attached to
    assert final["run_id"] == first["run_id"]
    assert final["results"]["outputs"][0]["image"]
    assert rest[-1][0] - killed < TAKEOVER_BOUND + 3.0  # the result, polled by B


def test_a_local_run_whose_owner_was_killed_ends_run_lost_for_its_follower(
    redis_url: str, prefix: str
) -> None:
    with (
        _instance(redis_url, prefix, None) as (a, a_url),
        _instance(redis_url, prefix, None) as (_, b_url),
    ):
        with httpx.stream("GET", f"{a_url}/run", params={"prompt": "x"}) as response:
            assert response.status_code == 200
            seen = _read_until(response, 2)
            _stored(redis_url, prefix, seen[-1].id or "")
            killed = _kill(a)
        rest = list(_resume(b_url, seen[-1].id or ""))
    # What the owner logged after the client's last event, then the end: never a hang.
    arrived, event = rest[-1]
    assert [e.event for _, e in rest[:-1]] == ["progress"] * (len(rest) - 1)
    assert event.event == "error"
    body = json.loads(event.data)
    assert body["code"] == "run_lost"
    assert body["message"] == "The run was lost with the server that was running it."
    token, count = parse_position(seen[-1].id or "") or ("", 0)
    assert parse_position(event.id or "") == (token, count + len(rest))
    assert arrived - killed < TAKEOVER_BOUND + 3.0


def test_without_a_store_a_sealed_id_resumes_a_scale_run_whose_instance_was_killed(
    prefix: str,
) -> None:
    secret = secrets.token_urlsafe(32)
    with (
        _fake_scale() as scale,
        _instance(None, prefix, scale, secret) as (a, a_url),
        _instance(None, prefix, scale, secret) as (_, b_url),
    ):
        with httpx.stream("GET", f"{a_url}/run", params={"prompt": "x"}) as response:
            assert response.status_code == 200
            seen = _read_until(response, 2)
            _kill(a)
        rest = [event for _, event in _resume(b_url, seen[-1].id or "")]
    assert all((e.id or "").startswith("s.") for e in seen + rest)
    assert rest[-1].event == "result"
    assert [parse_position(e.id or "")[1] for e in rest] == list(range(3, 3 + len(rest)))  # type: ignore[index]
    assert json.loads(rest[-1].data)["uuid"] == json.loads(seen[0].data)["uuid"]


@pytest.mark.anyio
async def test_an_owner_whose_run_was_taken_over_stops_and_writes_no_more(
    redis_url: str, prefix: str
) -> None:
    store = RedisStore(redis_url, prefix=prefix)
    registry = RunRegistry(30.0, store=store)
    gate = asyncio.Event()

    async def stream() -> AsyncIterator[Progress]:
        yield Progress("STARTED", run_id="r", fraction=0.1)
        await gate.wait()
        yield Progress("SUCCESS", run_id="r", results=Results(()))

    log = await registry.create(request_id="rq")
    assert log is not None
    run = registry.start(stream(), request_id="rq", timeout=None, log=log)
    name = lease_name(log.token)
    for _ in range(200):  # the owner takes its lease as the run starts
        if await store.lease_owner(name) == registry.instance:
            break
        await asyncio.sleep(0.01)
    assert await store.read_events(log.token, 0, timeout=2.0)
    # Another instance holds the lease now (as after a long stall of this one).
    await store.release_lease(name, registry.instance)
    assert await store.acquire_lease(name, "elsewhere", ttl=30.0)
    seen: list[dict[str, Any]] = []

    async def follow() -> None:
        async for event in run.follow(0):
            seen.append(event)

    with anyio.fail_after(5), pytest.raises(IkproxyError) as caught:
        await follow()
    assert caught.value.code == "run_lost"
    assert len(seen) == 1
    gate.set()
    # Nothing is written after the loss (not the run_lost error either): wait for it in vain.
    assert await store.read_events(log.token, 1, timeout=0.5) == []
    info = await store.run_info(log.token)
    assert info is not None
    assert (info.count, info.done) == (1, False)
    assert await store.lease_owner(name) == "elsewhere"
    await store.aclose()

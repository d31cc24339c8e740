"""The store contract, held by `MemoryStore` and by `RedisStore` on a real redis-server."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest

from ikproxy.stores import Append, MemoryStore, RedisStore, RunInfo, Store, StoreUnavailable
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("redis_url")
    redis_store = RedisStore(url, prefix=f"t{secrets.token_hex(4)}")
    yield redis_store
    await redis_store.aclose()


async def _is_none(value: Awaitable[object]) -> bool:
    return await value is None


async def _eventually(check: Callable[[], Awaitable[bool]], within: float = 2.0) -> bool:
    """Whether `check()` holds within `within` seconds (a TTL has to pass: time is the event)."""
    for _ in range(int(within / 0.01)):
        if await check():
            return True
        await anyio.sleep(0.01)
    return False


def test_both_stores_follow_the_protocol() -> None:
    assert isinstance(MemoryStore(), Store)
    assert isinstance(RedisStore("redis://127.0.0.1:1/0"), Store)
    assert MemoryStore.shared is False
    assert RedisStore.shared is True


async def test_a_run_log_keeps_numbered_events_in_order(store: Store) -> None:
    await store.create_run("r1", {"request_id": "abc"}, ttl=30)
    assert await store.run_info("r1") == RunInfo(0, False, False, {"request_id": "abc"})
    assert await store.append_events("r1", 1, [{"a": 1}, {"a": 2}], ttl=30) == 2
    assert await store.append_events("r1", 3, [{"a": 3, "results": []}], ttl=30, final=True) == 3
    assert await store.read_events("r1", 0, timeout=0.1) == [
        (1, {"a": 1}),
        (2, {"a": 2}),
        (3, {"a": 3, "results": []}),
    ]
    assert await store.read_events("r1", 2, timeout=0.1, limit=5) == [(3, {"a": 3, "results": []})]
    assert await store.read_events("r1", 0, timeout=0.1, limit=1) == [(1, {"a": 1})]
    info = await store.run_info("r1")
    assert info is not None
    assert (info.count, info.done) == (3, True)


async def test_append_refuses_a_gap_and_reports_the_count(store: Store) -> None:
    await store.create_run("r2", {}, ttl=30)
    assert await store.append_events("r2", 2, [{"n": 2}], ttl=30) == 0
    assert await store.append_events("r2", 1, [{"n": 1}], ttl=30) == 1
    assert await store.append_events("r2", 1, [{"n": 1}], ttl=30) == 1
    assert await store.append_events("unknown", 1, [{"n": 1}], ttl=30) == -1
    assert await store.read_events("r2", 0, timeout=0.05) == [(1, {"n": 1})]


async def test_nothing_is_appended_after_the_terminal_event(store: Store) -> None:
    await store.create_run("r3", {}, ttl=30)
    await store.append_events("r3", 1, [{"results": {}}], ttl=30, final=True)
    assert await store.append_events("r3", 2, [{"late": True}], ttl=30) == 1


async def test_a_blocked_read_wakes_on_the_next_append(store: Store) -> None:
    await store.create_run("r4", {}, ttl=30)
    got: list[tuple[int, dict[str, object]]] = []

    async def read() -> None:
        got.extend(await store.read_events("r4", 0, timeout=4))

    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            await store.append_events("r4", 1, [{"x": 1}], ttl=30)
    assert got == [(1, {"x": 1})]


async def test_a_read_with_nothing_new_times_out_empty(store: Store) -> None:
    await store.create_run("r5", {}, ttl=30)
    with anyio.fail_after(2):
        assert await store.read_events("r5", 0, timeout=0.05) == []


async def test_runs_expire_and_followers_are_seen(store: Store) -> None:
    await store.create_run("r6", {}, ttl=30)
    await store.touch_run("r6", ttl=30)
    info = await store.run_info("r6")
    assert info is not None
    assert info.followed
    await store.delete_run("r6")
    assert await store.run_info("r6") is None
    await store.create_run("r7", {}, ttl=30)
    await store.expire_run("r7", ttl=0.001)
    assert await _eventually(lambda: _is_none(store.run_info("r7")))


async def test_token_bucket_lets_burst_through_then_asks_to_wait(store: Store) -> None:
    passed = [await store.acquire_token("k", rate=1, burst=5) for _ in range(8)]
    assert passed[:5] == [None] * 5
    waits = passed[5:]
    assert all(w is not None and 0 < w <= 3.0 for w in waits)
    assert await store.acquire_token("other", rate=1, burst=5) is None


async def test_a_refunded_token_can_be_taken_again_but_never_beyond_the_burst(
    store: Store,
) -> None:
    assert [await store.acquire_token("r", rate=0.001, burst=2) for _ in range(2)] == [None] * 2
    assert await store.acquire_token("r", rate=0.001, burst=2) is not None
    await store.refund_token("r", rate=0.001, burst=2)
    assert await store.acquire_token("r", rate=0.001, burst=2) is None
    assert await store.acquire_token("r", rate=0.001, burst=2) is not None
    # Refunds of a full bucket (or of a key never seen) add nothing beyond its burst.
    for _ in range(3):
        await store.refund_token("full", rate=0.001, burst=1)
    assert await store.acquire_token("full", rate=0.001, burst=1) is None
    assert await store.acquire_token("full", rate=0.001, burst=1) is not None


async def test_active_run_slots_are_capped_and_freed(store: Store) -> None:
    assert await store.acquire_slot("c", "a", limit=2, ttl=30) is None
    assert await store.acquire_slot("c", "b", limit=2, ttl=30) is None
    wait = await store.acquire_slot("c", "c", limit=2, ttl=30)
    assert wait is not None
    assert 0 < wait <= 30
    assert await store.acquire_slot("c", "a", limit=2, ttl=30) is None  # already held
    assert await store.renew_slot("c", "a", ttl=30)
    assert not await store.renew_slot("c", "nobody", ttl=30)
    await store.release_slot("c", "a")
    assert await store.acquire_slot("c", "c", limit=2, ttl=30) is None


async def test_an_expired_slot_is_freed(store: Store) -> None:
    assert await store.acquire_slot("e", "a", limit=1, ttl=0.05) is None
    assert await _eventually(lambda: _is_none(store.acquire_slot("e", "b", limit=1, ttl=30)))
    assert not await store.renew_slot("e", "a", ttl=30)


async def test_leases_have_one_owner_at_a_time(store: Store) -> None:
    assert await store.acquire_lease("run:x", "A", ttl=30)
    assert not await store.acquire_lease("run:x", "B", ttl=30)
    assert await store.acquire_lease("run:x", "A", ttl=30)
    assert await store.lease_owner("run:x") == "A"
    assert await store.renew_lease("run:x", "A", ttl=30)
    assert not await store.renew_lease("run:x", "B", ttl=30)
    await store.release_lease("run:x", "B")
    assert await store.lease_owner("run:x") == "A"
    await store.release_lease("run:x", "A")
    assert await store.lease_owner("run:x") is None
    assert await store.acquire_lease("run:x", "B", ttl=0.05)
    assert await _eventually(lambda: store.acquire_lease("run:x", "C", ttl=30))
    assert not await store.renew_lease("run:x", "B", ttl=30)


async def test_an_unreachable_redis_fails_promptly() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with anyio.fail_after(3):
        with pytest.raises(StoreUnavailable):
            await store.acquire_token("k", rate=1, burst=1)
        with pytest.raises(StoreUnavailable):
            await store.read_events("r", 0, timeout=1)
    await store.aclose()


async def test_fail_open_lets_limits_through_when_redis_is_down() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5, fail_open=True)
    with anyio.fail_after(3):
        assert await store.acquire_token("k", rate=1, burst=1) is None
        assert await store.acquire_slot("k", "s", limit=1, ttl=5) is None
        with pytest.raises(StoreUnavailable):
            await store.create_run("r", {}, ttl=5)
    await store.aclose()


async def test_append_many_writes_several_runs_at_once(store: Store) -> None:
    await store.create_run("m1", {}, ttl=30)
    await store.create_run("m2", {}, ttl=30)
    counts = await store.append_many(
        [
            Append("m1", 1, [{"a": 1}, {"a": 2}]),
            Append("m2", 1, [{"b": 1, "results": {}}], final=True),
            Append("m2", 5, [{"gap": True}]),
            Append("gone", 1, [{"c": 1}]),
        ],
        ttl=30,
    )
    assert counts == [2, 1, 1, -1]
    assert await store.append_many([Append("m1", 3, [])], ttl=30) == [2]  # a heartbeat
    assert [n for n, _ in await store.read_events("m1", 0, timeout=0.05)] == [1, 2]
    info = await store.run_info("m2")
    assert info is not None
    assert info.done

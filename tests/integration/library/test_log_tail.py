"""LogTail on a real Redis: many followers, one blocking read, each gets its own run's events."""

from __future__ import annotations

import secrets

import anyio
import pytest

from ikproxy.stores import RedisStore, StoreUnavailable
from ikproxy.stores.tail import LogTail
from tests.support.redis import redis_server
from tests.support.servers import free_port


@pytest.mark.anyio
async def test_followers_of_several_runs_share_one_reader(redis_url: str) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    store = RedisStore(redis_url, prefix=prefix)
    tail = LogTail(redis_url, prefix=prefix)
    try:
        for run in ("a", "b"):
            await store.create_run(run, {}, ttl=30)
            await store.append_events(run, 1, [{"n": f"{run}1"}], ttl=30)
        a, b, a2 = tail.follow("a"), tail.follow("b"), tail.follow("a")
        assert await a.read("a", 0, timeout=2) == [(1, {"n": "a1"})]
        assert await b.read("b", 0, timeout=2) == [(1, {"n": "b1"})]
        with anyio.fail_after(2):  # a follower blocked on nothing yet is woken by a new event
            async with anyio.create_task_group() as group:
                got: list[object] = []

                async def wait() -> None:
                    got.extend(await a.read("a", 1, timeout=5))

                group.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                await store.append_events("a", 2, [{"n": "a2"}, {"n": "a3"}], ttl=30)
        assert got == [(2, {"n": "a2"}), (3, {"n": "a3"})]
        # Another follower of the same run reads from where it asks: from the start here.
        assert await a2.read("a", 0, timeout=2) == [
            (1, {"n": "a1"}),
            (2, {"n": "a2"}),
            (3, {"n": "a3"}),
        ]
        assert await a2.read("a", 1, timeout=2) == [(2, {"n": "a2"}), (3, {"n": "a3"})]
        assert await b.read("b", 1, timeout=0.2) == []
        for reader in (a, b, a2):
            reader.close()
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_follower_learns_that_redis_is_gone(tmp_path: object) -> None:
    port = free_port()
    with redis_server(tmp_path / "redis", port) as url:  # type: ignore[operator]
        tail = LogTail(url, prefix="gone", timeout=0.5)
        reader = tail.follow("r")
        assert await reader.read("r", 0, timeout=0.2) == []
    with pytest.raises(StoreUnavailable, match="following a run log failed"):
        await reader.read("r", 0, timeout=7)
    reader.close()

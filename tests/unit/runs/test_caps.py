"""`ikproxy.runs.caps`: the active-run cap of one proxy, on an in-memory store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from ikproxy.errors import HTTPError
from ikproxy.model import Progress, Results
from ikproxy.runs.caps import ActiveRuns
from ikproxy.stores import MemoryStore

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]]) -> T:
    """`main()` on a fresh event loop; the slot renewer left behind is cancelled with it."""
    return asyncio.run(main())  # type: ignore[arg-type]


class Clock:
    """A store clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^max_active_runs must be at least 1$"):
        ActiveRuns(MemoryStore(), 0)


def test_the_run_past_the_limit_gets_429_with_a_retry_after() -> None:
    async def main() -> None:
        caps = ActiveRuns(MemoryStore(), 2)
        first, second = await caps.acquire("alice"), await caps.acquire("alice")
        assert first != second
        assert len(caps) == 2
        with pytest.raises(HTTPError) as refused:
            await caps.acquire("alice")
        error = refused.value
        assert (error.status, error.code) == (429, "too_many_runs")
        # The earliest slot expires in 30 s (the TTL), but Retry-After says at most 5 s.
        assert error.message == "too many active runs (at most 2): retry in 5 s"
        assert error.headers == {"Retry-After": "5"}
        assert len(caps) == 2

    run(main)


def test_retry_after_is_the_earliest_expiry_rounded_up_when_short() -> None:
    async def main() -> None:
        store = MemoryStore()
        store.clock = clock = Clock()
        caps = ActiveRuns(store, 1, ttl=10.0)
        await caps.acquire("k")
        clock.now += 7.5  # 2.5 s left on the slot
        with pytest.raises(HTTPError) as refused:
            await caps.acquire("k")
        assert refused.value.headers == {"Retry-After": "3"}
        assert refused.value.message.endswith("retry in 3 s")

    run(main)


def test_each_key_has_its_own_slots() -> None:
    async def main() -> None:
        caps = ActiveRuns(MemoryStore(), 1)
        await caps.acquire("alice")
        await caps.acquire("bob")
        with pytest.raises(HTTPError):
            await caps.acquire("alice")
        assert len(caps) == 2

    run(main)


def test_a_released_slot_is_free_again_and_a_second_release_is_harmless() -> None:
    async def main() -> None:
        caps = ActiveRuns(MemoryStore(), 1)
        slot = await caps.acquire("k")
        await caps.release(slot)
        assert len(caps) == 0
        await caps.release(slot)
        await caps.release("never-held")
        assert len(caps) == 0
        await caps.acquire("k")
        assert len(caps) == 1

    run(main)


def test_instances_sharing_a_store_share_the_cap_until_a_dead_ones_ttl_runs_out() -> None:
    async def main() -> None:
        store = MemoryStore()
        store.clock = clock = Clock()
        dead, alive = ActiveRuns(store, 1, ttl=30.0), ActiveRuns(store, 1, ttl=30.0)
        await dead.acquire("k")
        with pytest.raises(HTTPError):
            await alive.acquire("k")
        clock.now += 30.5  # the slot of the instance that died was never renewed
        await alive.acquire("k")
        assert len(alive) == 1

    run(main)


async def _stream(items: list[Any], seen: list[int], caps: ActiveRuns) -> AsyncIterator[Any]:
    for item in items:
        yield item
        seen.append(len(caps))  # what the cap held while the consumer had this item


def _final() -> Progress:
    return Progress("SUCCESS", (0, 0), results=Results(uuid="u"))


@pytest.mark.parametrize("final", ["progress", "wire object"])
def test_the_slot_is_freed_before_the_result_goes_out(final: str) -> None:
    async def main() -> list[int]:
        caps = ActiveRuns(MemoryStore(), 1)
        slot = await caps.acquire("k")
        last = _final() if final == "progress" else {"results": {"outputs": []}}
        items = [Progress("STARTED"), {"state": "STARTED", "results": None}, last]
        held: list[int] = []
        async for _ in caps.hold(slot, _stream(items, [], caps)):
            held.append(len(caps))
        await caps.acquire("k")  # the client's next run starts at once
        return held

    assert run(main) == [1, 1, 0]


def test_a_stream_closed_early_frees_its_slot_and_closes_the_upstream() -> None:
    closed: list[bool] = []

    async def upstream() -> AsyncIterator[Progress]:
        try:
            yield Progress("PENDING")
            yield Progress("STARTED")
        finally:
            closed.append(True)

    async def main() -> int:
        caps = ActiveRuns(MemoryStore(), 1)
        slot = await caps.acquire("k")
        held = caps.hold(slot, upstream())
        assert await held.__anext__() == Progress("PENDING")
        await held.aclose()  # type: ignore[attr-defined]
        return len(caps)

    assert run(main) == 0
    assert closed == [True]


def test_a_failing_stream_frees_its_slot() -> None:
    async def upstream() -> AsyncIterator[Progress]:
        yield Progress("STARTED")
        raise RuntimeError("upstream failed")

    async def main() -> int:
        caps = ActiveRuns(MemoryStore(), 1)
        slot = await caps.acquire("k")
        with pytest.raises(RuntimeError, match="upstream failed"):
            async for _ in caps.hold(slot, upstream()):
                pass
        return len(caps)

    assert run(main) == 0

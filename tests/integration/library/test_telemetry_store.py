"""A real Redis store's calls timed into `ikproxy.store.duration`, and its failures counted.

The store reports to OpenTelemetry's global providers, set once for the session
(`tests.support.telemetry.global_recorder`).
"""

from __future__ import annotations

import secrets

import pytest

from ikproxy.stores import RedisStore, StoreUnavailable
from tests.support.servers import free_port
from tests.support.telemetry import global_recorder

pytestmark = pytest.mark.anyio


async def test_store_calls_are_timed_by_operation(redis_url: str) -> None:
    recorder = global_recorder()
    commands = recorder.total("ikproxy.store.duration", operation="command")
    reads = recorder.total("ikproxy.store.duration", operation="blocking_read")
    errors = recorder.total("ikproxy.store.errors")
    store = RedisStore(redis_url, prefix=f"t{secrets.token_hex(4)}")
    try:
        await store.create_run("r", {}, ttl=5)
        await store.append_events("r", 1, [{"state": "PENDING"}], ttl=5)
        assert await store.read_events("r", 0, timeout=0.01) == [(1, {"state": "PENDING"})]
    finally:
        await store.aclose()
    assert recorder.total("ikproxy.store.duration", operation="command") == commands + 2
    assert recorder.total("ikproxy.store.duration", operation="blocking_read") == reads + 1
    assert recorder.total("ikproxy.store.errors") == errors


async def test_an_unreachable_store_counts_an_error() -> None:
    recorder = global_recorder()
    errors = recorder.total("ikproxy.store.errors", operation="command")
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable):
            await store.run_info("r")
    finally:
        await store.aclose()
    assert recorder.total("ikproxy.store.errors", operation="command") == errors + 1

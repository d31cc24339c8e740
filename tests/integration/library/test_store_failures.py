"""Every failure of a RedisStore, on a real redis-server: error replies are 503
`store_unavailable` like connection errors (and `fail_open` applies to them), and no
password of a store URL, nor any credential of an input URL, reaches a log record (at
DEBUG, every logger), a repr, an exception message or a response."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.routing import Mount

from ikproxy.asgi import create_app
from ikproxy.policy import Policy, TokenBucket
from ikproxy.redaction import fingerprint
from ikproxy.runs.ownership import OwnerLease, lease_name
from ikproxy.stores import RedisStore, StoreUnavailable
from tests.support.deployments import ScriptedDeployment
from tests.support.redis import redis_server
from tests.support.servers import free_port, serving

PASSWORD = "Pw-7f1e9c-s3cret"
WRONG = "Wrong-4b2d-s3cret"
INPUT_SECRET = "Input-9a3e-s3cret"
SECRETS = (PASSWORD, WRONG, INPUT_SECRET)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A redis-server of its own (its configuration is changed), with a password: its URL
    with the password in it."""
    with redis_server(tmp_path / "redis", None, "--requirepass", PASSWORD) as url:
        yield url.replace("redis://", f"redis://:{PASSWORD}@")


@contextlib.asynccontextmanager
async def _admin(url: str) -> AsyncIterator[aioredis.Redis]:
    admin = aioredis.from_url(url)
    try:
        yield admin
    finally:
        await admin.config_set("maxmemory", 0)
        await admin.aclose()


@contextlib.asynccontextmanager
async def _oom(url: str) -> AsyncIterator[None]:
    async with _admin(url) as admin:
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", 1)
        yield


@contextlib.asynccontextmanager
async def _readonly(url: str) -> AsyncIterator[None]:
    async with _admin(url) as admin:
        await admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        try:
            yield
        finally:
            await admin.execute_command("REPLICAOF", "NO", "ONE")


@contextlib.asynccontextmanager
async def _busy(url: str) -> AsyncIterator[None]:
    """A script that loops until killed: once past `busy-reply-threshold`, every command is
    answered BUSY."""
    async with _admin(url) as admin:
        await admin.config_set("lua-time-limit", 10)
        looping = aioredis.from_url(url)
        async with anyio.create_task_group() as tasks:

            async def loop() -> None:
                with contextlib.suppress(Exception):
                    await looping.eval("while true do end", 0)

            tasks.start_soon(loop)
            probe = aioredis.from_url(url)
            with anyio.fail_after(5):
                while True:  # wait for the BUSY state: the condition, not a delay
                    try:
                        await probe.ping()
                    except aioredis.ResponseError as exc:
                        if str(exc).startswith("BUSY"):
                            break
            try:
                yield
            finally:
                await probe.execute_command("SCRIPT", "KILL")
                await probe.aclose()
        await looping.aclose()


FAILURES = {
    "oom": (_oom, "(OutOfMemoryError): command not allowed when used memory"),
    "readonly": (_readonly, "(ReadOnlyError): You can't write against a read only replica"),
    "busy": (_busy, "(ResponseError): BUSY Redis is busy running a script"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_an_error_reply_is_store_unavailable_and_fail_open_applies(
    server: str, failure: str
) -> None:
    condition, reply = FAILURES[failure]
    store = RedisStore(server, prefix="t", timeout=2)
    lenient = RedisStore(server, prefix="t", timeout=2, fail_open=True)
    async with condition(server):
        with pytest.raises(StoreUnavailable) as refused:
            await store.create_run("r", {}, ttl=5)
        assert str(refused.value).startswith("Redis at redis://127.0.0.1:")
        assert f"refused a command {reply}" in str(refused.value)
        with pytest.raises(StoreUnavailable):
            await store.acquire_token("k", rate=1, burst=1)
        assert await lenient.acquire_token("k", rate=1, burst=1) is None
    await store.aclose()
    await lenient.aclose()


@contextlib.contextmanager
def _app(store: RedisStore, **options: Any) -> Iterator[httpx.Client]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await store.aclose()

    proxy = create_app(ScriptedDeployment(), store=store, parameters={"prompt": str}, **options)
    app = Starlette(routes=[Mount("/api", app=proxy)], lifespan=lifespan)
    with serving(app) as client:
        yield client


def test_an_error_reply_through_the_proxy_is_a_503_and_fail_open_lets_the_run_through(
    server: str,
) -> None:
    limit = {"rate_limit": TokenBucket(rate=100, burst=100)}
    with (
        _app(RedisStore(server, prefix="a"), **limit) as strict,
        _app(RedisStore(server, prefix="b", fail_open=True), **limit) as lenient,
        anyio.from_thread.start_blocking_portal() as portal,
    ):
        portal.call(_set_maxmemory, server, 1)
        try:
            refused = strict.get("/api/run", params={"prompt": "x"})
            let_through = lenient.get("/api/run", params={"prompt": "x"})
        finally:
            portal.call(_set_maxmemory, server, 0)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "store_unavailable"
    assert let_through.status_code == 200
    assert "event: result" in let_through.text


async def _set_maxmemory(url: str, value: int) -> None:
    admin = aioredis.from_url(url)
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", value)
    await admin.aclose()


# -- no credential anywhere -------------------------------------------------------------------


class _Everything(logging.Handler):
    """Every record of every logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def _all_logs() -> Iterator[_Everything]:
    handler = _Everything()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("ikproxy", "httpx", "httpcore", "redis", "uvicorn")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for lg, old in zip(loggers, levels, strict=True):
            lg.setLevel(old)


def _scan(*texts: str) -> list[str]:
    return [f"{secret} in {text[:300]!r}" for text in texts for secret in SECRETS if secret in text]


def _requests(client: httpx.Client) -> list[str]:
    """The answers to what reaches the store: a new run, a resume, an input URL."""
    answers = [
        client.get("/api/run", params={"prompt": "x"}),
        client.get("/api/run", headers={"Last-Event-ID": "abcdefghijklmnopqrstuvwx:1"}),
        client.post(
            "/api/run",
            json={
                "prompt": "x",
                "image": f"http://user:{INPUT_SECRET}@127.0.0.1:{free_port()}/a.png",
            },
        ),
        client.post(
            "/api/run",
            json={
                "prompt": "x",
                "image": f"https://user:{INPUT_SECRET}@10.0.0.1/a.png?sig={INPUT_SECRET}",
            },
        ),
    ]
    return [f"{r.status_code} {r.headers} {r.text}" for r in answers]


def test_no_credential_in_any_log_record_repr_message_or_response(server: str) -> None:
    closed = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    wrong = server.replace(PASSWORD, WRONG)
    options = {
        "rate_limit": TokenBucket(rate=100, burst=100),
        "resume_window": 30.0,
        "allow_input_urls": ["http://127.0.0.1", "https://10.0.0.1"],
        "allow_private_input_urls": True,
    }
    seen: list[str] = []
    with _all_logs() as logs, anyio.from_thread.start_blocking_portal() as portal:
        for url, setup, timeout in [
            (closed, None, 0.5),  # redis down
            (wrong, None, 0.5),  # a wrong password
            (server, "oom", 1.0),  # error replies
            (server, "readonly", 1.0),
            (server, "pause", 0.2),  # timeouts
        ]:
            store = RedisStore(url, prefix="s", timeout=timeout)
            seen += [repr(store), repr(Policy(store=store, **options))]
            if setup:
                portal.call(_condition, server, setup, True)
            try:
                with _app(store, **options) as client:
                    seen += _requests(client)
                seen += portal.call(_store_errors, url, timeout)
            finally:
                if setup:
                    portal.call(_condition, server, setup, False)
    assert any("store_unavailable" in line for line in seen)  # the failures did happen
    assert any("Redis at" in line for line in logs.lines)
    assert _scan(*seen, *logs.lines) == []
    assert [line for line in seen if line.startswith("cause: ") and line != "cause: None"] == []


async def _condition(url: str, name: str, on: bool) -> None:
    admin = aioredis.from_url(url)
    if name == "oom":
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", 1 if on else 0)
    elif name == "readonly":
        args = ("127.0.0.1", str(free_port())) if on else ("NO", "ONE")
        await admin.execute_command("REPLICAOF", *args)
    elif on:
        await admin.execute_command("CLIENT", "PAUSE", "3000", "ALL")
    else:
        await admin.execute_command("CLIENT", "UNPAUSE")
    await admin.aclose()


async def _store_errors(url: str, timeout: float) -> list[str]:
    """The messages and reprs of the store's own failures, called directly."""
    store = RedisStore(url, prefix="d", timeout=timeout)
    found: list[str] = []
    for call in (
        lambda: store.create_run("r", {}, ttl=5),
        lambda: store.acquire_token("k", rate=1, burst=1),
        lambda: store.read_events("r", 0, timeout=0.1),
        lambda: store.run_info("r"),
    ):
        try:
            await call()
        except StoreUnavailable as exc:  # not chained: redis-py's text names keys
            found += [str(exc), repr(exc), f"cause: {exc.__cause__!r}"]
    await store.aclose()
    return found


class _Until(logging.Handler):
    """Records of the `ikproxy` logger; `seen` is set once `count` of them came."""

    def __init__(self, count: int) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.count = count
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter("%(levelname)s %(message)s").format(record))
        if len(self.lines) >= self.count:
            self.seen.set()


@pytest.mark.anyio
async def test_run_tokens_are_logged_by_their_fingerprint_only(server: str) -> None:
    token = "RunToken-bearer-" + "x" * 8
    handler = _Until(2)
    logger = logging.getLogger("ikproxy")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    down = RedisStore(f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0", timeout=0.2)
    up = RedisStore(server, prefix="f", timeout=1)
    lost = anyio.Event()
    try:
        failing = OwnerLease(down, token, "a", ttl=1.0, every=0.05)
        failing.keep(lambda: None)  # its store is down: a warning per renewal
        taken = OwnerLease(up, token, "a", ttl=1.0, every=0.05)
        assert await taken.acquire()
        await up.release_lease(lease_name(token), "a")
        assert await up.acquire_lease(lease_name(token), "b", ttl=30)  # another instance
        taken.keep(lost.set)  # the next renewal finds it taken: an error
        with anyio.fail_after(10):
            await lost.wait()
            await anyio.to_thread.run_sync(handler.seen.wait)
        await failing.release()
        await taken.release()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        await down.aclose()
        await up.aclose()
    mark = fingerprint(token)
    assert any(f"run lease renewal failed [run={mark}]" in line for line in handler.lines)
    assert any(f"another instance took over a run [run={mark}]" in line for line in handler.lines)
    assert [line for line in handler.lines if token in line or PASSWORD in line] == []

"""Concurrency helpers shared by every layer: deadlines, closing streams, sync bridges.

An event loop in a daemon thread serves sync callers (`SyncClient`, WSGI servers).

`anyio.from_thread.start_blocking_portal()` runs its loop in a non-daemon
worker thread, which the interpreter waits for at exit: a portal its owner
forgot to close would hang the program forever. This loop thread is a daemon,
reached through anyio's own `BlockingPortal`, and is stopped by its owner, by
the garbage collector, or by the end of the program, whichever comes first.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar, cast

import anyio
from anyio.from_thread import BlockingPortal

__all__ = [
    "PortalThread",
    "aclose",
    "blocking_portal",
    "deadline",
    "iterate",
    "iterate_in_portal",
]

T = TypeVar("T")
_DONE = object()


class PortalThread:
    """A running event loop in a daemon thread; `portal` calls into it from any other thread."""

    def __init__(self, name: str) -> None:
        self._ready = threading.Event()
        self._portal: BlockingPortal | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError("could not start the event loop thread") from self._error

    @property
    def portal(self) -> BlockingPortal:
        assert self._portal is not None
        return self._portal

    def _main(self) -> None:
        try:
            anyio.run(self._serve)
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        async with BlockingPortal() as portal:
            self._portal = portal
            self._ready.set()
            await portal.sleep_until_stopped()

    def stop(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run `cleanup` in the loop, stop the loop and wait for its thread."""
        try:
            self.portal.call(cleanup)
        finally:
            self.portal.call(self.portal.stop, True)
            self._thread.join()

    def stop_soon(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Like `stop`, without waiting: safe from a finalizer, in any thread."""

        async def cleanup_and_stop() -> None:
            try:
                await cleanup()
            finally:
                await self.portal.stop(cancel_remaining=True)

        try:
            self.portal.start_task_soon(cleanup_and_stop)
        except RuntimeError:
            pass  # the loop is already stopped


def iterate(
    portal: BlockingPortal, stream: AsyncIterator[T], aclose: Callable[[], Awaitable[None]]
) -> Iterator[T]:
    """Iterate an async iterator from another thread; closing this closes it."""

    async def step() -> object:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return _DONE

    try:
        while True:
            item = portal.call(step)
            if item is _DONE:
                return
            yield cast(T, item)
    finally:
        try:
            portal.call(aclose)
        except RuntimeError:
            pass  # closed from the loop thread itself, or after the loop stopped


def deadline(timeout: float | None) -> AbstractContextManager[object]:
    """`anyio.fail_after`, or nothing at all when there is no deadline (saves a scope)."""
    return nullcontext() if timeout is None else anyio.fail_after(timeout)


async def aclose(stream: object) -> None:
    """Close an async iterator if it can be closed (generators, our streams)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


_portal_lock = threading.Lock()
_portal: tuple[int, PortalThread] | None = None


def blocking_portal() -> BlockingPortal:
    """The process-wide portal: one event loop thread shared by all sync callers.

    Started on first use, and again in a forked child (a loop thread does not
    survive `fork`). One shared loop means state such as locks and caches can
    be shared between requests, which a loop per request would break. The
    loop thread is a daemon, so it never holds the interpreter open at exit.
    """
    global _portal
    pid = os.getpid()
    current = _portal
    if current is not None and current[0] == pid:
        return current[1].portal
    with _portal_lock:
        if _portal is None or _portal[0] != pid:
            _portal = (pid, PortalThread("ikproxy-portal"))
        return _portal[1].portal


def iterate_in_portal(ait: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code, one item per call into the portal.

    Closing the returned generator (as WSGI servers do when the client leaves)
    closes the async iterator on the portal's loop.
    """

    return iterate(blocking_portal(), ait, functools.partial(aclose, ait))

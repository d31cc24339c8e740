"""An event loop in a daemon thread, for sync callers (`SyncClient`, WSGI servers).

`anyio.from_thread.start_blocking_portal()` runs its loop in a non-daemon
worker thread, which the interpreter waits for at exit: a portal its owner
forgot to close would hang the program forever. This loop thread is a daemon,
reached through anyio's own `BlockingPortal`, and is stopped by its owner, by
the garbage collector, or by the end of the program, whichever comes first.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar, cast

import anyio
from anyio.from_thread import BlockingPortal

__all__ = ["PortalThread", "iterate"]

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

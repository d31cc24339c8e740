"""Who may start a run: the authorize hook, the rate limit, and the caller's key.

`Access.admit(request)` runs the policy's `authorize` hook, then takes a token
from the rate limiter for the caller's key. Sync hooks and limiters run right
there, in the caller's thread (so a WSGI hook sees its framework's request
context); only what is awaitable is returned to be awaited.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Any

from ikproxy.errors import HTTPError
from ikproxy.policy.config import Policy
from ikproxy.policy.limits import RateLimiter, SharedTokenBucket, TokenBucket
from ikproxy.proxy.request import ProxyRequest
from ikproxy.stores import Store

__all__ = ["Access", "limiter_for"]


class Access:
    """The policy's access hooks and rate limiter, applied to one request at a time."""

    def __init__(self, policy: Policy, store: Store, *, keyed: bool) -> None:
        self.policy = policy
        self.limiter = limiter_for(policy.rate_limit, store)
        #: Whether the caller's key is needed besides the rate limit (a cap, a sealer).
        self.keyed = keyed

    def admit(self, request: ProxyRequest) -> Awaitable[None] | None:
        """Run the authorize hook, then the rate limit; sync hooks run right here."""
        policy = self.policy
        verdict: Any = policy.authorize(request.native) if policy.authorize else None
        if inspect.isawaitable(verdict):
            return self._admit_after(request, verdict)
        _check_verdict(verdict)
        return self._rate_limit(request)

    async def _admit_after(self, request: ProxyRequest, verdict: Awaitable[Any]) -> None:
        _check_verdict(await verdict)
        pending = self._rate_limit(request)
        if pending is not None:
            await pending

    def _rate_limit(self, request: ProxyRequest) -> Awaitable[None] | None:
        """Take a token for the caller's key; sync hooks and limiters run right here."""
        limiter = self.limiter
        if limiter is None:
            return None
        key_fn = self.policy.rate_limit_key
        key: Any = key_fn(request.native) if key_fn else (request.client or "anonymous")
        if inspect.isawaitable(key):
            return _rate_limit_after(limiter, key)
        wait = limiter.acquire(str(key))
        if inspect.isawaitable(wait):
            return _rate_limit_after(limiter, wait=wait)
        _check_wait(wait)
        return None

    def caller_key(self, request: ProxyRequest) -> Any:
        """The caller's key (maybe awaitable) for the active-run cap and sealed references.

        The rate limit's key; None when there is neither a cap nor a sealer.
        """
        if not self.keyed:
            return None
        key_fn = self.policy.rate_limit_key
        return key_fn(request.native) if key_fn else (request.client or "anonymous")


def limiter_for(limiter: RateLimiter | None, store: Store) -> RateLimiter | None:
    """The policy's limiter; a `TokenBucket`'s limits held in the store when it is shared."""
    if store.shared and isinstance(limiter, TokenBucket):
        return SharedTokenBucket(store, limiter.rate, limiter.burst)
    return limiter


def _check_verdict(verdict: Any) -> None:
    if verdict is False:
        raise HTTPError(403, "forbidden", "Not allowed.")


async def _rate_limit_after(
    limiter: RateLimiter, key: Awaitable[Any] | None = None, wait: Any = None
) -> None:
    if key is not None:
        wait = limiter.acquire(str(await key))
    if inspect.isawaitable(wait):
        wait = await wait
    _check_wait(wait)


def _check_wait(wait: float | None) -> None:
    if wait is not None:
        seconds = max(1, int(wait + 0.999))
        raise HTTPError(
            429,
            "rate_limited",
            f"too many requests: retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )

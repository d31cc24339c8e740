"""Who may ask for a run and what it costs: the site check, the hooks, rate limits and CORS.

A request for `/run` goes through, in order: the site check (a page of another
site gets 403 `cross_site`, unless its origin is in `allowed_origins`), the
`authorize` hook (401/403), then the caller's key is computed, once
(`rate_limit_key`). Nothing is charged yet: the run's token is taken when the
run is accepted (`charge`, after its parameters and the active-run cap
passed) and given back if it then fails to start (`refund`); a resume takes a
token of the caller's resume limit instead (`charge_resume`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Mapping
from typing import Any, Final

from ikproxy.errors import AccessDenied, CrossSiteRequest, RateLimited
from ikproxy.policy.config import Policy
from ikproxy.policy.limits import RateLimiter, SharedTokenBucket, TokenBucket
from ikproxy.proxy.request import ProxyRequest
from ikproxy.stores import Store

__all__ = ["CORS_EXPOSED", "Access", "limiter_for", "with_headers"]

#: The response headers a front end on an allowed origin may read, besides the safe ones.
CORS_EXPOSED: Final = "X-Request-ID, Retry-After"
#: How long a browser may keep a preflight's answer, in seconds.
_PREFLIGHT_MAX_AGE: Final = "600"
#: The prefix of a caller's key in the resume limit's buckets (apart from its runs').
_RESUME: Final = "resume:"


class Access:
    """The access rules of one proxy: its policy's hooks, limiters and allowed origins."""

    def __init__(self, policy: Policy, store: Store) -> None:
        self.policy = policy
        #: Takes one token per accepted run, per caller key.
        self.limiter = limiter_for(policy.limiter, store)
        #: Takes one token per resume, per caller key (None: resumes are not limited).
        self.resume_limiter = limiter_for(policy.resume_limiter, store)
        self.origins = frozenset(policy.allowed_origins)

    # -- before the hooks ---------------------------------------------------------

    def check_site(self, request: ProxyRequest) -> None:
        """Refuse a request sent by a page of another site, unless its origin is allowed.

        Browsers send `Sec-Fetch-Site` on every request (Fetch Metadata); a request
        without it (a script, a server, an old browser) is not refused here.
        """
        if request.header("sec-fetch-site") != "cross-site":
            return
        if request.header("origin") in self.origins:
            return
        raise CrossSiteRequest(
            "runs cannot be started from another site: its origin is not in allowed_origins"
        )

    # -- the hooks: authorize, then the caller's key --------------------------------

    def admit(self, request: ProxyRequest) -> Any:
        """Run `authorize`, then compute the caller's key once: the key, or an awaitable of it.

        Sync hooks run right here (in the caller's thread); the key is None when
        nothing needs one (no rate limit, cap or sealed reference).
        """
        authorize = self.policy.authorize
        verdict: Any = authorize(request.native) if authorize else None
        if inspect.isawaitable(verdict):
            return self._admit_after(request, verdict)
        _check_verdict(verdict)
        return self._key(request)

    async def _admit_after(self, request: ProxyRequest, verdict: Awaitable[Any]) -> str | None:
        _check_verdict(await verdict)
        key = self._key(request)
        text: str | None = await key if inspect.isawaitable(key) else key
        return text

    def _key(self, request: ProxyRequest) -> Any:
        if not self.policy.keys_callers:
            return None
        key_fn = self.policy.rate_limit_key
        key: Any = key_fn(request.native) if key_fn else (request.client or "anonymous")
        if inspect.isawaitable(key):
            return _as_text(key)
        return str(key)

    # -- what a run costs ---------------------------------------------------------

    async def charge(self, key: str | None) -> None:
        """Take the token of an accepted run from `key`'s bucket; 429 `rate_limited` if none.

        Atomic in the limiter (a lock, or one step in a shared store): two runs
        racing for the last token cannot both get it.
        """
        if self.limiter is not None:
            await _take(self.limiter, str(key))

    async def refund(self, key: str | None) -> None:
        """Give back the token of a run that failed to start (the deployment refused it)."""
        if self.limiter is not None:
            done = self.limiter.refund(str(key))
            if inspect.isawaitable(done):
                await done

    async def charge_resume(self, key: str | None) -> None:
        """Take a token of `key`'s resume limit (its own buckets); 429 `rate_limited` if none."""
        if self.resume_limiter is not None:
            await _take(self.resume_limiter, _RESUME + str(key))

    # -- CORS, for the allowed origins only ------------------------------------------

    def cors_headers(self, request: ProxyRequest) -> dict[str, str]:
        """The CORS headers of a response to `request`: none unless its origin is allowed."""
        if not self.origins:
            return {}
        origin = request.header("origin")
        if origin not in self.origins:
            return {"Vary": "Origin"}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Expose-Headers": CORS_EXPOSED,
            "Vary": "Origin",
        }

    def preflight(self, request: ProxyRequest, methods: tuple[str, ...]) -> dict[str, str] | None:
        """The headers of the answer to a preflight from an allowed origin; None otherwise."""
        method = request.header("access-control-request-method")
        if request.header("origin") not in self.origins or method is None:
            return None
        headers = {
            **self.cors_headers(request),
            "Access-Control-Allow-Methods": ", ".join(methods),
            "Access-Control-Max-Age": _PREFLIGHT_MAX_AGE,
        }
        asked = request.header("access-control-request-headers")
        if asked:
            headers["Access-Control-Allow-Headers"] = asked
        return headers


def with_headers(headers: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """`headers` with `extra` added; `Vary` values are merged rather than replaced."""
    merged = dict(headers)
    for name, value in extra.items():
        if name == "Vary" and merged.get(name):
            merged[name] = f"{merged[name]}, {value}"
        else:
            merged[name] = value
    return merged


def limiter_for(limiter: RateLimiter | None, store: Store) -> RateLimiter | None:
    """The policy's limiter; a `TokenBucket`'s limits held in the store when it is shared."""
    if store.shared and isinstance(limiter, TokenBucket):
        return SharedTokenBucket(store, limiter.rate, limiter.burst)
    return limiter


def _check_verdict(verdict: Any) -> None:
    if verdict is False:
        raise AccessDenied(403)


async def _as_text(key: Awaitable[Any]) -> str:
    return str(await key)


async def _take(limiter: RateLimiter, key: str) -> None:
    wait = limiter.acquire(key)
    if inspect.isawaitable(wait):
        wait = await wait
    if wait is not None:
        seconds = max(1, int(wait + 0.999))
        raise RateLimited(
            f"too many requests: retry in {seconds} s", headers={"Retry-After": str(seconds)}
        )

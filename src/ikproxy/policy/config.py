"""What a browser may ask for: the parameter allow-list, limits, and the access hooks.

All of it is framework-neutral; every surface (the ASGI app and each adapter)
applies the same `Policy` through `ikproxy.proxy.Proxy`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ikproxy.errors import PolicyError
from ikproxy.policy.checks import check_option, normalize_origin, unknown_option
from ikproxy.policy.limits import MaybeAwaitable, RateLimiter, TokenBucket
from ikproxy.policy.params import (
    PARAM_TYPES,
    ModelParameters,
    Param,
    invalid_parameter,
    is_model,
    model_parameters,
)
from ikproxy.stores import Store
from ikproxy.telemetry import RunEndHook, Telemetry

__all__ = ["Authorize", "Policy", "policy_problems"]

#: `authorize(request)`: return True/None to allow, False to refuse with 403, or
#: raise `AccessDenied(401 or 403, message)`. May be sync or async.
Authorize = Callable[[Any], MaybeAwaitable[bool | None]]


@dataclass
class Policy:
    """Everything the proxy enforces before a run starts, for every surface alike.

    * `parameters`: the allow-list a browser may set (`{"prompt": Param(str, required=True)}`;
      a bare type stands for an optional `Param(type)`), or a pydantic model class or a
      dataclass (see `ikproxy.policy.params`).
    * `fixed_parameters`: sent on every run; a browser cannot see or override them.
    * `task`: the deployment task to run (None: its default).
    * `max_inputs`, `max_upload_bytes`: image uploads per request and the request body limit.
    * `max_image_pixels`: the largest image accepted (width times height; 413 beyond).
    * `max_form_fields`: the most text fields of a form (multipart or urlencoded) or a
      query string (413 beyond, as soon as the count is passed).
    * `authorize(request)`, `rate_limit` / `rate_limit_key(request)`: access hooks, given
      the framework's own request object. `rate_limit` counts accepted runs only (a
      refused request costs nothing): a `TokenBucket`, or a rate in words (`"3/minute"`,
      `"3/m"`; units s, sec, second, m, min, minute, h, hour, d, day), or None.
    * `resume_rate_limit`: how often one caller may resume runs it may read (their own
      limit, apart from `rate_limit`, against reconnect storms): `"30/minute"` by default.
    * `allowed_origins`: the origins (`"https://app.example.com"`) of front ends on other
      sites that may start runs; they get CORS headers (preflight included). A run asked
      for by any other site (`Sec-Fetch-Site: cross-site`) is refused 403 `cross_site`.
    * `timeout`: a deadline per run in seconds; `keepalive`: the idle interval for
      keepalive comments, in seconds; `finish_on_disconnect`: let a run finish when its
      client leaves.
    * `retry_ms`: the SSE `retry:` field sent first (an `EventSource`'s reconnection
      delay, in milliseconds); None sends none.
    * `resume_window`: make runs resumable (see `ikproxy.runs`): a run goes on without
      its client for this many seconds, and a reconnecting client resumes it from its
      `Last-Event-ID`.
    * `store`: where runs, rate limits and active-run caps live (`ikproxy.stores`):
      None keeps them in this process; a `RedisStore` shares them across processes
      and machines, so that a run resumes on any instance and limits hold on all.
    * `max_active_runs`: at most this many runs of one client (the rate-limit key)
      at once, on every instance sharing the store; the next gets 429 `too_many_runs`.
    * `resume_secret`: with `resume_window`, and a deployment that can attach to a
      run (SCALE), event ids carry a sealed reference to the upstream run (see
      `ikproxy.sealed`), so any instance sharing the secret resumes the run: bytes
      or str of at least 32 bytes, kept as secret as the SCALE token.
    * `accept`: the media types a browser may upload (`"image/*"`, `"video/mp4"`,
      `"video/*"`, `"*/*"`), checked on the bytes' magic numbers. Images are verified
      and sent inline; anything else is written to a temporary file and reaches the
      deployment as a `FileIO` (SCALE storage, or a path for a local task). The
      `max_upload_bytes` limit applies to the whole body: raise it for videos.
    * `allow_input_urls`: the origins (`"https://images.example.com"`) from which a
      browser may give an input as a URL (`{"image": "https://..."}`, or an
      `image_url` field); none by default. The proxy fetches it within
      `max_upload_bytes` and `input_url_timeout` seconds, never from a private,
      loopback or link-local address unless `allow_private_input_urls`, and checks
      every redirect the same way.
    * `input_url_timeout`: in seconds.
    * `inline_output_limit`: an image output larger than this many bytes reaches the
      browser by reference (a URL under the proxy's mount, see `ikproxy.outputs`),
      as stored outputs always do; None inlines every image. `output_window`: how
      long after the run such URLs work, in seconds. `presigned_outputs`: hand out
      the storage's own presigned URL for a stored output instead of streaming it.
    * `on_run_end(request, summary)`: called once per started run after its end (a
      `RunSummary`: outcome, caller, duration, events and bytes sent...), for billing
      and audit; sync or async, run in the background, its errors logged.
    * `telemetry`: the OpenTelemetry providers ikproxy reports to (a `Telemetry`);
      None: the global ones, as the application configures them.

    Every option is checked when the policy is made: an unknown one, or a bad
    value, raises `PolicyError` naming it ("did you mean `max_active_runs`?").
    """

    parameters: Mapping[str, Param | type] | type[Any] | ModelParameters = field(
        default_factory=dict
    )
    fixed_parameters: Mapping[str, Any] = field(default_factory=dict)
    task: str | None = None
    max_inputs: int = 1
    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_form_fields: int = 1000
    authorize: Authorize | None = None
    rate_limit: RateLimiter | str | None = field(default_factory=TokenBucket)
    resume_rate_limit: RateLimiter | str | None = "30/minute"
    rate_limit_key: Callable[[Any], MaybeAwaitable[str]] | None = None
    timeout: float | None = 300.0
    keepalive: float = 15.0
    retry_ms: int | None = 3000
    finish_on_disconnect: bool = False
    resume_window: float | None = None
    store: Store | None = None
    max_active_runs: int | None = None
    resume_secret: bytes | str | None = field(default=None, repr=False)
    accept: Sequence[str] = ("image/*",)
    allow_input_urls: Sequence[str] = ()
    allowed_origins: Sequence[str] = ()
    allow_private_input_urls: bool = False
    input_url_timeout: float = 30.0
    inline_output_limit: int | None = 1_000_000
    output_window: float = 300.0
    presigned_outputs: bool = False
    on_run_end: RunEndHook | None = None
    telemetry: Telemetry | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for option in dataclasses.fields(self):
            problem = check_option(option.name, getattr(self, option.name))
            if problem is not None:
                raise problem
        self.parameters = _parameters(self.parameters)
        params = self.parameters
        names = params.names if isinstance(params, ModelParameters) else tuple(params)
        clash = sorted(set(names) & set(self.fixed_parameters))
        if clash:
            raise PolicyError(
                "fixed_parameters", f"parameters both allowed and fixed: {', '.join(clash)}"
            )
        if self.resume_secret is not None and self.resume_window is None:
            raise PolicyError(
                "resume_secret", "needs resume_window (how long a run stays resumable)"
            )
        if isinstance(self.rate_limit, str):
            self.rate_limit = TokenBucket.parse(self.rate_limit)
        if isinstance(self.resume_rate_limit, str):
            self.resume_rate_limit = TokenBucket.parse(self.resume_rate_limit)
        self.allowed_origins = tuple(normalize_origin(o) for o in self.allowed_origins)

    @property
    def limiter(self) -> RateLimiter | None:
        """`rate_limit` as a limiter (a rate in words became a `TokenBucket` when made)."""
        return self.rate_limit if isinstance(self.rate_limit, RateLimiter) else None

    @property
    def resume_limiter(self) -> RateLimiter | None:
        """`resume_rate_limit` as a limiter, when runs are resumable at all."""
        limiter = self.resume_rate_limit
        return limiter if self.resume_window and isinstance(limiter, RateLimiter) else None

    @property
    def keys_callers(self) -> bool:
        """Whether a caller's key (`rate_limit_key`) is needed: for the rate limit, the
        active-run cap, the resumable runs (sealed or in the store) bound to it, or the
        summary `on_run_end` receives."""
        return (
            self.rate_limit is not None
            or self.max_active_runs is not None
            or self.resume_secret is not None
            or self.resume_limiter is not None
            or (self.resume_window is not None and self.rate_limit_key is not None)
            or self.on_run_end is not None
        )

    def validate(self, raw: Mapping[str, Any], *, from_text: bool) -> dict[str, Any]:
        """The browser's parameters checked against the allow-list, plus the fixed ones.

        Raises `HTTPError(400, "invalid_parameter", ...)` naming the first
        unknown, missing or ill-typed parameter.
        """
        if not isinstance(self.parameters, Mapping):  # a model (ikproxy.policy.params)
            return {**self.parameters.validate(raw, from_text=from_text), **self.fixed_parameters}
        allowed: Mapping[str, Param] = self.parameters  # type: ignore[assignment]
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            names = ", ".join(sorted(allowed)) or "none"
            raise invalid_parameter(f"unknown parameter '{unknown[0]}' (allowed: {names})")
        values: dict[str, Any] = {}
        for name, spec in allowed.items():
            if name in raw:
                values[name] = spec.convert(name, raw[name], from_text=from_text)
            elif spec.required:
                raise invalid_parameter(f"missing required parameter '{name}'")
            elif spec.default is not None:
                values[name] = spec.default
        values.update(self.fixed_parameters)
        return values


#: Every option `Policy` takes: its dataclass fields.
OPTIONS = tuple(option.name for option in dataclasses.fields(Policy))


def _init_checking_names(init: Callable[..., None]) -> Callable[..., None]:
    """`Policy.__init__`, refusing an unknown option with the nearest valid one."""

    @functools.wraps(init)
    def checked(self: Policy, *args: Any, **options: Any) -> None:
        for name in options:
            if name not in OPTIONS:
                raise unknown_option(name, OPTIONS)
        init(self, *args, **options)

    return checked


setattr(Policy, "__init__", _init_checking_names(Policy.__init__))  # noqa: B010


def policy_problems(options: Mapping[str, Any]) -> list[PolicyError]:
    """Every problem of these `Policy` options, one `PolicyError` each; [] if they make one.

    Unknown names and bad values are each reported; a problem between options
    (`resume_secret` without `resume_window`) once the values are sound.
    """
    problems = [unknown_option(name, OPTIONS) for name in options if name not in OPTIONS]
    for name, value in options.items():
        problem = check_option(name, value) if name in OPTIONS else None
        if problem is not None:
            problems.append(problem)
    if not problems:
        try:
            Policy(**options)
        except PolicyError as exc:
            problems.append(exc)
    return problems


def _parameters(
    parameters: Mapping[str, Param | type] | type[Any] | ModelParameters,
) -> dict[str, Param] | ModelParameters:
    """The allow-list as `Param`s by name, or a model's parameters (`ikproxy.policy.params`)."""
    if is_model(parameters):
        return model_parameters(parameters)  # type: ignore[arg-type]
    if isinstance(parameters, ModelParameters):
        return parameters
    if not isinstance(parameters, Mapping):
        raise PolicyError(
            "parameters",
            f"expected a mapping of names to Params, a pydantic model or a dataclass, "
            f"not the {type(parameters).__name__} {parameters!r}",
        )
    params: dict[str, Param] = {}
    for name, spec in parameters.items():
        if isinstance(spec, Param):
            params[name] = spec
        elif spec in PARAM_TYPES:
            params[name] = Param(spec)
        else:
            raise PolicyError(
                "parameters", f"parameter {name!r}: expected a Param or str/int/float/bool"
            )
    return params

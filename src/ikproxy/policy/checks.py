"""What a `Policy` option may hold, checked when the policy is made, with one message per problem.

Each problem is a `PolicyError` naming the option, what is wrong, and the
nearest valid choice when there is one ("did you mean `max_active_runs`?").
The valid option names are the `Policy` dataclass's fields, so an option
added there is known here at once. Django's system checks report the same
messages (`ikproxy.adapters.django`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from ikproxy.errors import PolicyError
from ikproxy.policy.limits import PERIODS, RateLimiter, parse_rate
from ikproxy.stores import Store

__all__ = ["check_option", "nearest", "normalize_origin", "unknown_option"]

Check = Callable[[Any], "str | None"]


def nearest(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to `word` (a likely typo), or None if none is close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_option(name: str, valid: Collection[str]) -> PolicyError:
    """The error for an option `Policy` does not have, with the nearest valid one."""
    guess = nearest(name, valid)
    hint = f"did you mean `{guess}`?" if guess else f"the options are {', '.join(sorted(valid))}"
    return PolicyError(name, f"no such option; {hint}")


def check_option(name: str, value: Any) -> PolicyError | None:
    """The problem with `value` for option `name`, or None (None too for an unchecked option)."""
    check = CHECKS.get(name)
    problem = check(value) if check is not None else None
    return PolicyError(name, problem) if problem else None


def normalize_origin(origin: str) -> str:
    """`"https://App.example.com/"` as `"https://app.example.com"`: how browsers send `Origin`.

    Raises `ValueError` for anything that is not a scheme, a host and an optional port.
    """
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{origin!r} is not an origin (scheme://host[:port])")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{origin!r} is not an origin: no path, query or user (scheme://host)")
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname.lower()}{port}"


# -- the checks, one per kind of value -----------------------------------------------


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _seconds(*, optional: bool) -> Check:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not _is_number(value):
            none = " or None" if optional else ""
            return f"expected a number of seconds{none}, not the {_shown(value)}"
        if value <= 0:
            return f"must be a positive number of seconds, not {value!r}"
        return None

    return check


def _count(minimum: int, unit: str, *, optional: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            none = " or None" if optional else ""
            return f"expected a whole number of {unit}{none}, not the {_shown(value)}"
        if value < minimum:
            return f"must be at least {minimum}, not {value!r}"
        return None

    return check


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected True or False, not the {_shown(value)}"


def _callable(value: Any) -> str | None:
    if value is None or callable(value):
        return None
    return f"expected a function (the hook) or None, not the {_shown(value)}"


def _strings(value: Any) -> str | None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return f"expected a list of strings, not the {_shown(value)}"
    bad = [item for item in value if not isinstance(item, str)]
    return f"expected a list of strings, not one holding the {_shown(bad[0])}" if bad else None


def _origins(value: Any) -> str | None:
    problem = _strings(value)
    if problem:
        return problem
    for origin in value:
        if origin.strip() == "*":
            return "'*' is not accepted: list the origins of your front ends"
        try:
            normalize_origin(origin)
        except ValueError as exc:
            return str(exc)
    return None


def _rate(value: Any) -> str | None:
    if value is None or isinstance(value, RateLimiter):
        return None
    if not isinstance(value, str):
        return (
            "expected a rate such as '3/minute', a TokenBucket (or other RateLimiter) or None, "
            f"not the {_shown(value)}"
        )
    try:
        parse_rate(value)
    except ValueError as exc:
        count, _, unit = value.strip().partition("/")
        guess = nearest(unit.strip().lower(), PERIODS) if unit.strip() else None
        hint = f"; did you mean '{count.strip()}/{guess}'?" if guess else ""
        return f"{exc}{hint}"
    return None


def _store(value: Any) -> str | None:
    if value is None or isinstance(value, Store):
        return None
    if isinstance(value, str):
        return f"expected a store or None, not the {_shown(value)} (RedisStore(url) makes one)"
    methods = sorted(n for n, v in vars(Store).items() if callable(v) and not n.startswith("_"))
    missing = [name for name in methods if not hasattr(value, name)]
    if 0 < len(missing) < len(methods):
        return f"the store lacks the Store method(s) {', '.join(missing)}"
    return f"expected a store (MemoryStore, RedisStore) or None, not the {_shown(value)}"


def _secret(value: Any) -> str | None:
    if value is None or isinstance(value, (bytes, str)):
        return None
    return "expected bytes or str of at least 32 bytes, or None"


def _mapping(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return None
    return f"expected a mapping of names to values, not the {_shown(value)}"


def _task(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return None
    return f"expected a task name (str) or None, not the {_shown(value)}"


#: The check of each option that has one (`parameters` is checked by `Policy` itself).
CHECKS: Mapping[str, Check] = {
    "fixed_parameters": _mapping,
    "task": _task,
    "max_inputs": _count(0, "inputs"),
    "max_upload_bytes": _count(0, "bytes"),
    "max_image_pixels": _count(1, "pixels"),
    "max_form_fields": _count(1, "fields"),
    "authorize": _callable,
    "rate_limit": _rate,
    "resume_rate_limit": _rate,
    "rate_limit_key": _callable,
    "timeout": _seconds(optional=True),
    "keepalive": _seconds(optional=False),
    "retry_ms": _count(0, "milliseconds", optional=True),
    "finish_on_disconnect": _flag,
    "resume_window": _seconds(optional=True),
    "store": _store,
    "max_active_runs": _count(1, "runs", optional=True),
    "resume_secret": _secret,
    "accept": _strings,
    "allow_input_urls": _strings,
    "allowed_origins": _origins,
    "allow_private_input_urls": _flag,
    "input_url_timeout": _seconds(optional=False),
    "inline_output_limit": _count(0, "bytes", optional=True),
    "output_window": _seconds(optional=False),
    "presigned_outputs": _flag,
}

"""`ikproxy.policy.config`: a `Policy` refuses a contradictory set-up when it is made, and
validates a browser's parameters against its allow-list."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ikproxy.errors import HTTPError, PolicyError
from ikproxy.policy import Param, Policy, TokenBucket
from ikproxy.policy.config import OPTIONS, policy_problems


def test_bare_types_stand_for_optional_params() -> None:
    policy = Policy(parameters={"prompt": Param(str, required=True), "steps": int, "hd": bool})
    assert policy.parameters == {
        "prompt": Param(str, required=True),
        "steps": Param(int),
        "hd": Param(bool),
    }


def test_the_defaults() -> None:
    policy = Policy()
    assert policy.parameters == {}
    assert (policy.max_inputs, policy.max_upload_bytes, policy.max_image_pixels) == (
        1,
        10 * 1024 * 1024,
        40_000_000,
    )
    assert (policy.timeout, policy.keepalive, policy.retry_ms) == (300.0, 15.0, 3000)
    assert policy.accept == ("image/*",)
    assert policy.keys_callers  # the default token bucket needs a caller's key


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"parameters": {"prompt": list}},
            "`parameters`: parameter 'prompt': expected a Param or str/int/float/bool",
        ),
        (
            {
                "parameters": {"seed": int, "prompt": str},
                "fixed_parameters": {"seed": 1, "prompt": "x"},
            },
            "`fixed_parameters`: parameters both allowed and fixed: prompt, seed",
        ),
        ({"keepalive": 0}, "`keepalive`: must be a positive number of seconds, not 0"),
        (
            {"keepalive": "15"},
            "`keepalive`: expected a number of seconds, not the str '15'",
        ),
        ({"resume_window": -1}, "`resume_window`: must be a positive number of seconds, not -1"),
        ({"max_active_runs": 0}, "`max_active_runs`: must be at least 1, not 0"),
        (
            {"max_active_runs": "2"},
            "`max_active_runs`: expected a whole number of runs or None, not the str '2'",
        ),
        (
            {"resume_secret": "s" * 32},
            "`resume_secret`: needs resume_window (how long a run stays resumable)",
        ),
        ({"accept": "image/*"}, "`accept`: expected a list of strings, not the str 'image/*'"),
        (
            {"allow_input_urls": "https://images.example.com"},
            "`allow_input_urls`: expected a list of strings, not the str "
            "'https://images.example.com'",
        ),
        ({"output_window": 0}, "`output_window`: must be a positive number of seconds, not 0"),
        ({"inline_output_limit": -1}, "`inline_output_limit`: must be at least 0, not -1"),
        ({"max_upload_bytes": -1}, "`max_upload_bytes`: must be at least 0, not -1"),
        ({"max_inputs": -1}, "`max_inputs`: must be at least 0, not -1"),
        ({"max_image_pixels": 0}, "`max_image_pixels`: must be at least 1, not 0"),
        (
            {"max_active_run": 1},
            "`max_active_run`: no such option; did you mean `max_active_runs`?",
        ),
        ({"ratelimit": "3/m"}, "`ratelimit`: no such option; did you mean `rate_limit`?"),
        (
            {"rate_limit": "3/mn"},
            "`rate_limit`: invalid rate '3/mn': expected N/unit with N >= 1 and unit one of "
            "s, sec, second, m, min, minute, h, hour, d, day (for example '3/minute'); "
            "did you mean '3/min'?",
        ),
        (
            {"rate_limit": 3},
            "`rate_limit`: expected a rate such as '3/minute', a TokenBucket (or other "
            "RateLimiter) or None, not the int 3",
        ),
        (
            {"store": "redis://127.0.0.1:6379/0"},
            "`store`: expected a store or None, not the str 'redis://127.0.0.1:6379/0' "
            "(RedisStore(url) makes one)",
        ),
        (
            {"authorize": "myapp.authorize"},
            "`authorize`: expected a function (the hook) or None, not the str 'myapp.authorize'",
        ),
        (
            {"allowed_origins": ["*"]},
            "`allowed_origins`: '*' is not accepted: list the origins of your front ends",
        ),
        (
            {"allowed_origins": ["https://app.example.com/page"]},
            "`allowed_origins`: 'https://app.example.com/page' is not an origin: "
            "no path, query or user (scheme://host)",
        ),
    ],
)
def test_a_bad_option_is_refused_when_made_naming_it(options: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as refused:
        Policy(**options)
    assert str(refused.value) == f"Policy option {message}"
    assert isinstance(refused.value, TypeError)
    assert isinstance(refused.value, ValueError)


def test_the_valid_options_are_the_dataclass_fields() -> None:
    names = {option.name for option in dataclasses.fields(Policy)}
    assert set(OPTIONS) == names
    for name in names:  # every field is accepted by name (no hand-kept list to forget)
        assert "no such option" not in str(policy_problems({name: object()}))


def test_policy_problems_reports_each_problem() -> None:
    problems = policy_problems({"max_active_run": 1, "rate_limit": "3/mn", "keepalive": 0})
    assert [p.option for p in problems] == ["max_active_run", "rate_limit", "keepalive"]
    assert policy_problems({"rate_limit": "3/m", "max_active_runs": 1}) == []


@pytest.mark.parametrize(
    ("text", "rate", "burst"),
    [
        ("3/s", 3.0, 3),
        ("3/sec", 3.0, 3),
        ("3/second", 3.0, 3),
        ("3/m", 3 / 60, 3),
        ("3/min", 3 / 60, 3),
        ("3/minute", 3 / 60, 3),
        ("10/h", 10 / 3600, 10),
        ("10/hour", 10 / 3600, 10),
        ("100/d", 100 / 86400, 100),
        (" 100 / Day ", 100 / 86400, 100),
    ],
)
def test_rates_in_words(text: str, rate: float, burst: int) -> None:
    bucket = TokenBucket.parse(text)
    assert (bucket.rate, bucket.burst) == (rate, burst)
    limiter = Policy(rate_limit=text).rate_limit
    assert isinstance(limiter, TokenBucket)
    assert (limiter.rate, limiter.burst) == (rate, burst)


@pytest.mark.parametrize(
    "text", ["3", "3/", "/m", "0/m", "-1/m", "3/minutes", "3/w", "3.5/m", "3/2m"]
)
def test_a_rate_in_other_words_is_refused_exactly(text: str) -> None:
    with pytest.raises(ValueError, match="invalid rate") as refused:
        TokenBucket.parse(text)
    assert str(refused.value) == (
        f"invalid rate {text!r}: expected N/unit with N >= 1 and unit one of "
        "s, sec, second, m, min, minute, h, hour, d, day (for example '3/minute')"
    )


def test_three_a_minute_is_three_at_once_then_one_every_twenty_seconds() -> None:
    bucket = TokenBucket.parse("3/minute")
    now = [0.0]
    bucket.clock = lambda: now[0]
    assert [bucket.acquire("k") for _ in range(3)] == [None, None, None]
    assert bucket.acquire("k") == pytest.approx(20.0)
    now[0] = 20.0
    assert bucket.acquire("k") is None
    bucket.refund("k")
    assert bucket.acquire("k") is None
    assert bucket.acquire("k") is not None


def test_the_limits_at_their_edges_are_accepted() -> None:
    policy = Policy(
        max_active_runs=1,
        resume_window=0.001,
        resume_secret="s" * 32,
        inline_output_limit=0,
        max_upload_bytes=0,
        max_inputs=0,
        max_image_pixels=1,
    )
    assert policy.max_active_runs == 1


@pytest.mark.parametrize(
    ("options", "keys"),
    [
        ({"rate_limit": None}, False),
        ({"rate_limit": None, "max_active_runs": 2}, True),
        ({"rate_limit": None, "resume_window": 60, "resume_secret": b"k" * 32}, True),
        ({}, True),
    ],
)
def test_a_callers_key_is_needed_only_by_what_uses_it(options: dict[str, Any], keys: bool) -> None:
    assert Policy(**options).keys_callers is keys


POLICY = Policy(
    parameters={
        "prompt": Param(str, required=True, max_length=5),
        "steps": Param(int, minimum=1, default=4),
        "hd": bool,
    },
    fixed_parameters={"seed": 7},
)


def test_text_values_are_converted_defaults_filled_and_fixed_ones_added() -> None:
    assert POLICY.validate({"prompt": "cat", "hd": "true"}, from_text=True) == {
        "prompt": "cat",
        "steps": 4,
        "hd": True,
        "seed": 7,
    }
    assert POLICY.validate({"prompt": "cat", "steps": 2}, from_text=False) == {
        "prompt": "cat",
        "steps": 2,
        "seed": 7,
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"prompt": "cat", "seed": "1"}, "unknown parameter 'seed' (allowed: hd, prompt, steps)"),
        ({"steps": "2"}, "missing required parameter 'prompt'"),
        ({"prompt": "a tall cat"}, "parameter 'prompt' is longer than 5 characters"),
        ({"prompt": "cat", "steps": "0"}, "parameter 'steps' must be at least 1"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(HTTPError) as refused:
        POLICY.validate(raw, from_text=True)
    error = refused.value
    assert (error.status, error.code, error.message) == (400, "invalid_parameter", message)


def test_a_policy_without_parameters_names_none_allowed() -> None:
    with pytest.raises(HTTPError) as refused:
        Policy().validate({"x": "1"}, from_text=True)
    assert refused.value.message == "unknown parameter 'x' (allowed: none)"

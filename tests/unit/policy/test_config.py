"""`ikproxy.policy.config`: a `Policy` refuses a contradictory set-up when it is made, and
validates a browser's parameters against its allow-list."""

from __future__ import annotations

from typing import Any

import pytest

from ikproxy.errors import HTTPError
from ikproxy.policy import Param, Policy


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
    ("options", "error", "message"),
    [
        (
            {"parameters": {"prompt": list}},
            TypeError,
            "parameter 'prompt': expected a Param or str/int/float/bool",
        ),
        (
            {
                "parameters": {"seed": int, "prompt": str},
                "fixed_parameters": {"seed": 1, "prompt": "x"},
            },
            ValueError,
            "parameters both allowed and fixed: prompt, seed",
        ),
        ({"keepalive": 0}, ValueError, "keepalive must be a positive number of seconds"),
        ({"resume_window": -1}, ValueError, "resume_window must be a positive number of seconds"),
        ({"max_active_runs": 0}, ValueError, "max_active_runs must be at least 1"),
        (
            {"resume_secret": "s" * 32},
            ValueError,
            "resume_secret needs resume_window (how long a run stays resumable)",
        ),
        ({"accept": "image/*"}, TypeError, "accept and allow_input_urls take a list of strings"),
        (
            {"allow_input_urls": "https://images.example.com"},
            TypeError,
            "accept and allow_input_urls take a list of strings",
        ),
        ({"output_window": 0}, ValueError, "output_window must be a positive number of seconds"),
        ({"inline_output_limit": -1}, ValueError, "inline_output_limit must not be negative"),
        (
            {"max_upload_bytes": -1},
            ValueError,
            "max_upload_bytes and max_inputs must not be negative",
        ),
        ({"max_inputs": -1}, ValueError, "max_upload_bytes and max_inputs must not be negative"),
        ({"max_image_pixels": 0}, ValueError, "max_image_pixels must be at least 1"),
    ],
)
def test_a_contradictory_policy_is_refused_when_made(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as refused:
        Policy(**options)
    assert str(refused.value) == message


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

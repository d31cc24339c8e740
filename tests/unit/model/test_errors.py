"""One error model: every error class's status and code match docs/protocol.md, by construction."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

import ikproxy
from ikproxy.errors import (
    AccessDenied,
    BadRequest,
    HTTPError,
    IkproxyError,
    InvalidInput,
    RunLost,
    StreamError,
    TooManyRuns,
    error_class,
    error_code,
    public_error,
)
from tests.support.servers import ROOT

DOCS = ROOT / "docs" / "protocol.md"
#: Modules that need an optional extra or print on import; their errors are imported elsewhere.
SKIP = {"ikproxy.__main__", "ikproxy.testing.__main__", "ikproxy.testing.pytest_plugin"}
ALIASES = {"ikproxy.caps", "ikproxy.images", "ikproxy.openapi", "ikproxy.outputs"}
ALIASES |= {"ikproxy.ownership", "ikproxy.params", "ikproxy.parsing", "ikproxy.sealed"}
ALIASES |= {"ikproxy.storage", "ikproxy.uploads"}


def _documented() -> dict[str, int]:
    """code -> status, from the table of docs/protocol.md's "Errors before the stream"."""
    text = DOCS.read_text()
    table = text[text.index("| Status | Code | Class | When |") :].split("\n\n")[0]
    found: dict[str, int] = {}
    for row in table.splitlines()[2:]:
        status, codes = row.split("|")[1:3]
        for code in re.findall(r"`([a-z_]+)`", codes):
            found[code] = int(status)
    return found


def _all_error_classes() -> list[type[IkproxyError]]:
    for info in pkgutil.walk_packages(ikproxy.__path__, "ikproxy."):
        if info.name in SKIP or info.name in ALIASES:
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:  # an optional extra this environment lacks
            continue
    seen: list[type[IkproxyError]] = [IkproxyError]
    stack = [IkproxyError]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


DOCUMENTED = _documented()
CLASSES = _all_error_classes()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_error_class_answers_the_documented_status(cls: type[IkproxyError]) -> None:
    if cls in (HTTPError, AccessDenied, StreamError):
        return  # status and code set per instance (checked below)
    assert cls.code in DOCUMENTED, f"{cls.__qualname__}: code {cls.code!r} is not in the docs table"
    assert cls.status == DOCUMENTED[cls.code], f"{cls.__qualname__}: {cls.status} for {cls.code}"
    assert cls.public_message
    assert cls.public_message[0].isupper()


def test_every_documented_code_has_a_class() -> None:
    owned = {vars(cls).get("code") for cls in CLASSES} | {"unauthenticated", "forbidden"}
    assert set(DOCUMENTED) <= owned


def test_a_deployment_invalid_input_is_a_400_not_a_500() -> None:
    assert public_error(InvalidInput("the image is not a JPEG")) == (
        400,
        "invalid_input",
        "The deployment refused the request's inputs.",
    )
    assert error_code(InvalidInput("x")) == "invalid_input"


def test_an_error_of_no_ikproxy_class_is_internal_and_says_nothing() -> None:
    assert public_error(KeyError("token=secret")) == (
        500,
        "internal",
        "An internal error occurred.",
    )
    assert public_error(TimeoutError())[:2] == (504, "timeout")


def test_a_code_replayed_from_a_log_takes_its_owner_class() -> None:
    replayed = IkproxyError("run_lost")
    replayed.code = "run_lost"
    assert public_error(replayed) == (502, "run_lost", RunLost.public_message)
    assert error_class("no_such_code") is IkproxyError


def test_a_refusal_class_fixes_its_status_and_sends_its_own_message() -> None:
    refusal = TooManyRuns(headers={"Retry-After": "3"})
    assert (refusal.status, refusal.code, refusal.headers) == (
        429,
        "too_many_runs",
        {"Retry-After": "3"},
    )
    assert public_error(BadRequest("request body is not valid JSON")) == (
        400,
        "bad_request",
        "request body is not valid JSON",
    )


def test_a_known_code_cannot_travel_with_another_status() -> None:
    with pytest.raises(ValueError, match="error code 'bad_request' goes with status 400, not 500"):
        HTTPError(500, "bad_request", "x")
    assert HTTPError(418, "teapot", "short and stout").status == 418
    assert AccessDenied(401).status == 401


def test_a_stream_error_reraised_by_a_run_is_the_upstreams_failure() -> None:
    assert public_error(StreamError("token_leak", "whatever upstream said"))[:2] == (
        502,
        "upstream_failed",
    )

"""Every error class a deployment may raise before its first event, through a real server
(uvicorn): the class's status, code and public message (an `HTTPError`'s own message),
never a 500, never the error's own text."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import ikproxy.errors as errors
from ikproxy.asgi import create_app
from ikproxy.errors import HTTPError, IkproxyError, StreamError, public_error
from tests.support.deployments import ScriptedDeployment
from tests.support.http import error_of
from tests.support.servers import serving

DETAIL = "secret detail: /srv/models/weights.bin"


def _classes() -> list[type[IkproxyError]]:
    found: list[type[IkproxyError]] = []
    todo: list[type[IkproxyError]] = [IkproxyError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return sorted(
        (c for c in found if c.__module__ == errors.__name__ and not c.__name__.startswith("_")),
        key=lambda c: c.__name__,
    )


def _instance(cls: type[IkproxyError]) -> IkproxyError:
    """The error as a deployment would raise it: with a detailed message."""
    if issubclass(cls, StreamError):
        return cls("upstream_failed", DETAIL)
    if cls is errors.AccessDenied:
        return cls(403, "denied here")
    if cls is HTTPError:
        return cls(400, "bad_request", "a refusal written for the client")
    if cls is errors.PolicyError:
        return cls("timeout", DETAIL)
    return cls(DETAIL)


CLASSES = _classes()


def test_every_class_is_walked() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"InvalidInput", "InvalidParameter", "UpstreamError", "StoreUnavailable"} <= names
    assert {"FetchTooLarge", "RunTimeout", "ResumeExpired", "AccessDenied"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_an_error_before_the_first_event_gets_its_class_answer(cls: type[IkproxyError]) -> None:
    exc = _instance(cls)
    deployment = ScriptedDeployment(refuse=exc)
    proxy = create_app(deployment, rate_limit=None, parameters={"prompt": str})
    with serving(Starlette(routes=[Mount("/api", app=proxy)])) as client:
        response = client.get("/api/run", params={"prompt": "x"})
    expected = public_error(exc)
    assert expected[0] < 500 or cls.status >= 500  # the table's own status, not `internal`
    # Only the root class and a misconfiguration (the server's own fault) are `internal`.
    assert expected[1] != "internal" or cls in (IkproxyError, errors.PolicyError)
    assert error_of(response) == expected
    if not isinstance(exc, HTTPError):  # a refusal's own message is written for the client
        assert DETAIL not in response.text

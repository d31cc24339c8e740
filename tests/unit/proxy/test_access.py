"""`ikproxy.proxy.access`: what a run costs, the caller's key computed once, and the site check.

The rate limit counts accepted runs: a request refused for any reason costs
nothing, a run the deployment refuses gives its token back, and a resume of a
run takes a token of its own limit. A page of another site cannot start a run
(403 `cross_site`) unless its origin is allowed, and then gets CORS headers.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ikproxy.asgi import create_app
from ikproxy.codecs.sse import SSEDecoder
from ikproxy.errors import UpstreamError
from ikproxy.policy import AccessDenied, Param
from ikproxy.proxy import Proxy, ProxyRequest
from tests.support.deployments import ScriptedDeployment

APP = "https://app.example.com"
CROSS = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}


def _client(deployment: Any = None, **options: Any) -> TestClient:
    options.setdefault("parameters", {"prompt": str})
    app = create_app(deployment or ScriptedDeployment(), **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TestClient(app, base_url="http://proxy.test")


def _statuses(client: TestClient, count: int, **kwargs: Any) -> list[int]:
    return [client.get("/run", **kwargs).status_code for _ in range(count)]


# -- what is charged ----------------------------------------------------------------


def test_refused_requests_cost_nothing_and_three_runs_a_minute_means_runs() -> None:
    def authorize(request: Any) -> None:
        if request.headers.get("authorization") != "Bearer k":
            raise AccessDenied(401)

    key = {"Authorization": "Bearer k"}
    with _client(
        rate_limit="3/minute", authorize=authorize, parameters={"prompt": Param(str, required=True)}
    ) as client:
        assert _statuses(client, 4) == [401] * 4  # authorize refused
        assert _statuses(client, 4, headers=key) == [400] * 4  # parameters refused
        assert _statuses(client, 4, headers=key, params={"prompt": "x"}) == [200, 200, 200, 429]
        limited = client.get("/run", headers=key, params={"prompt": "x"})
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) == 20  # one token every 20 s


def test_a_run_the_deployment_refuses_gives_its_token_back() -> None:
    refusing = ScriptedDeployment(refuse=UpstreamError("upstream said no"))
    with _client(refusing, rate_limit="1/minute") as client:
        assert _statuses(client, 3, params={"prompt": "x"}) == [502, 502, 502]
    with _client(ScriptedDeployment(), rate_limit="1/minute") as client:
        assert _statuses(client, 2, params={"prompt": "x"}) == [200, 429]


def test_two_requests_racing_for_the_last_token_do_not_both_run() -> None:
    deployment = ScriptedDeployment()
    proxy = Proxy(deployment, rate_limit="1/minute", parameters={"prompt": str})

    async def main() -> list[int]:
        request = ProxyRequest("GET", "/run", "prompt=x", client="1.2.3.4")
        answers = await asyncio.gather(*(proxy.handle(request) for _ in range(4)))
        return sorted(answer.status for answer in answers)

    assert asyncio.run(main()) == [200, 429, 429, 429]
    assert len(deployment.calls) == 1


def _first_id(client: TestClient, **kwargs: Any) -> str:
    response = client.get("/run", params={"prompt": "x"}, **kwargs)
    assert response.status_code == 200
    return SSEDecoder().feed(response.content)[0].id or ""


def test_a_resume_is_not_a_new_run_and_has_its_own_limit() -> None:
    options = {"rate_limit": "1/minute", "resume_window": 30.0, "resume_rate_limit": "2/minute"}
    with _client(**options) as client:
        last_id = _first_id(client)  # the one run of the minute
        assert _statuses(client, 1, params={"prompt": "x"}) == [429]
        resumes = _statuses(client, 3, headers={"Last-Event-ID": last_id})
        assert resumes == [200, 200, 429]
        # A resume of no run is refused for what it is, and costs nothing.
        assert _statuses(client, 2, headers={"Last-Event-ID": "nosuchrun:3"}) == [410, 410]


def test_resumes_are_limited_by_default_and_not_at_all_when_asked() -> None:
    assert Proxy(ScriptedDeployment(), resume_window=30).access.resume_limiter is not None
    assert Proxy(ScriptedDeployment()).access.resume_limiter is None  # nothing to resume
    unlimited = Proxy(ScriptedDeployment(), resume_window=30, resume_rate_limit=None)
    assert unlimited.access.resume_limiter is None


def test_the_callers_key_is_computed_once_per_request() -> None:
    calls: list[str] = []

    def rate_limit_key(request: Any) -> str:
        calls.append(request.url.path)
        return "alice"

    with _client(rate_limit_key=rate_limit_key, max_active_runs=2, resume_window=30.0) as client:
        last_id = _first_id(client)
        assert len(calls) == 1
        client.get("/run", headers={"Last-Event-ID": last_id})
        assert len(calls) == 2
        client.get("/run")  # a 400 after the key
        assert len(calls) == 3


# -- the site check and CORS ----------------------------------------------------------


def _run_requests(client: TestClient, headers: dict[str, str]) -> Iterator[Any]:
    yield client.get("/run", params={"prompt": "x"}, headers=headers)
    yield client.post("/run", data={"prompt": "x"}, headers=headers)
    yield client.post("/run", json={"prompt": "x"}, headers=headers)


def test_a_run_asked_for_by_another_site_is_refused() -> None:
    deployment = ScriptedDeployment()
    with _client(deployment, resume_window=30.0) as client:
        last_id = _first_id(client)
        refused = [*_run_requests(client, {**CROSS, "Cookie": "sessionid=s"})]
        refused.append(client.get("/run", headers={**CROSS, "Last-Event-ID": last_id}))
        # A navigation from another site sends no Origin at all.
        refused.append(client.get("/run?prompt=x", headers={"Sec-Fetch-Site": "cross-site"}))
    for response in refused:
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "cross_site"
        assert response.json()["error"]["message"] == (
            "runs cannot be started from another site: its origin is not in allowed_origins"
        )
        assert "access-control-allow-origin" not in response.headers
    assert len(deployment.calls) == 1


@pytest.mark.parametrize("site", ["same-origin", "same-site", "none", None])
def test_the_same_site_a_typed_url_and_requests_without_fetch_metadata_work(
    site: str | None,
) -> None:
    headers = {"Sec-Fetch-Site": site} if site else {}
    with _client() as client:
        assert [r.status_code for r in _run_requests(client, headers)] == [200, 200, 200]


def test_an_allowed_origin_runs_with_cors_headers_and_its_preflight() -> None:
    with _client(allowed_origins=[APP + "/"], resume_window=30.0) as client:
        allowed = {"Sec-Fetch-Site": "cross-site", "Origin": APP}
        answers = [*_run_requests(client, allowed)]
        preflight = client.options(
            "/run",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "last-event-id, authorization",
            },
        )
        other = client.options(
            "/run", headers={"Origin": CROSS["Origin"], "Access-Control-Request-Method": "GET"}
        )
        refused = client.get("/run", params={"prompt": "x"}, headers=CROSS)
        error = client.get("/run", params={"seed": "1"}, headers=allowed)
    for response in [*answers, error]:
        assert response.headers["access-control-allow-origin"] == APP
        assert response.headers["access-control-allow-credentials"] == "true"
        assert response.headers["access-control-expose-headers"] == "X-Request-ID, Retry-After"
        assert "Origin" in response.headers["vary"]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert error.status_code == 400  # refused for its parameters, readable by the page
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == APP
    assert preflight.headers["access-control-allow-methods"] == "GET, POST"
    assert preflight.headers["access-control-allow-headers"] == "last-event-id, authorization"
    assert other.status_code == 405
    assert "access-control-allow-origin" not in other.headers
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    assert refused.headers["vary"] == "Origin"

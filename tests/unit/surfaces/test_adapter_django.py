"""The Django URLconf: one view streaming under WSGI (`Client`) and ASGI (`AsyncClient`)."""

from __future__ import annotations

import json
import threading
import types
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tests-only",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=types.ModuleType("unused_urls"),
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
        MIDDLEWARE=[
            "django.middleware.gzip.GZipMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        # One in-memory database shared by every thread, as Django's test runner does.
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": "file:ikproxy-django-tests?mode=memory&cache=shared",
            }
        },
        USE_TZ=True,
    )
    django.setup()

import anyio
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler
from django.core.management import call_command
from django.http import HttpResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import include, path, reverse

import ikproxy.adapters.django
from ikproxy.errors import PolicyError
from ikproxy.policy import AccessDenied, Param, Policy, TokenBucket
from tests.support.deployments import ScriptedDeployment
from tests.support.http import aread_until, error_of, read_until

# Django buffers a stream of the wrong kind for its handler, with only this warning.
pytestmark = pytest.mark.filterwarnings("error:StreamingHttpResponse must consume")

PARAMS = {"prompt": Param(str, required=True, max_length=20)}
WATCHDOG = 5.0
#: Read by `urls()` from settings in `test_configuration_from_settings`.
SETTINGS_DEPLOYMENT = ScriptedDeployment()


def settings_authorize(request: Any) -> None:
    raise AccessDenied(401, "from settings")


@pytest.fixture(scope="module")
def user() -> User:
    call_command("migrate", run_syncdb=True, verbosity=0)
    user, _ = User.objects.get_or_create(username="ada")
    return user


@pytest.fixture
def deployment() -> Iterator[ScriptedDeployment]:
    deployment = ScriptedDeployment(hold=True)
    yield deployment
    deployment.release.set()


def _big_page(request: Any) -> HttpResponse:
    return HttpResponse(b"compress me " * 100, content_type="text/plain")


@contextmanager
def _serving(deployment: Any, **options: Any) -> Iterator[None]:
    """The proxy at /api/ (and a plain page at /page, which GZip compresses)."""
    options.setdefault("parameters", PARAMS)
    options.setdefault("rate_limit", None)
    urlconf = types.ModuleType("ikproxy_test_urls")
    urlconf.urlpatterns = [  # type: ignore[attr-defined]
        path("api/", include(ikproxy.adapters.django.urls(deployment, **options))),
        path("page", _big_page),
    ]
    with override_settings(ROOT_URLCONF=urlconf):
        yield


# -- WSGI: the test Client builds a WSGIRequest ---------------------------------------


def test_wsgi_streams_uncompressed_while_the_run_is_held(deployment: ScriptedDeployment) -> None:
    watchdog = threading.Timer(WATCHDOG, deployment.release.set)
    watchdog.start()
    try:
        with _serving(deployment):
            client = Client(headers={"Accept-Encoding": "gzip"})
            assert client.get("/page")["Content-Encoding"] == "gzip"  # GZip is on
            response = client.get("/api/run", {"prompt": "a cat"})
            assert response.status_code == 200
            assert response["Content-Type"] == "text/event-stream; charset=utf-8"
            assert response["Content-Encoding"] == "identity"
            assert response["X-Accel-Buffering"] == "no"
            chunks = iter(response.streaming_content)
            head = read_until(chunks, b"event: progress", 2)
            released_early = deployment.release.is_set()
            deployment.release.set()
            rest = b"".join(chunks)
    finally:
        watchdog.cancel()
    assert not released_early, "the first events waited for the end of the run"
    assert head.startswith(b": ikproxy protocol 1\n")
    assert rest.count(b"event: result") == 1


def test_wsgi_close_closes_the_run(deployment: ScriptedDeployment) -> None:
    with _serving(deployment):
        response = Client().get("/api/run", {"prompt": "a cat"})
        read_until(iter(response.streaming_content), b"event: progress")
        response.close()
    assert deployment.closed.wait(5), "the run went on after the client left"
    assert not deployment.release.is_set()


def test_wsgi_hooks_see_request_user(deployment: ScriptedDeployment, user: User) -> None:
    deployment.release.set()
    seen: list[str] = []

    def authorize(request: Any) -> None:
        seen.append(request.user.username)
        if not request.user.is_authenticated:
            raise AccessDenied(401, "Log in first.")

    with _serving(deployment, authorize=authorize):
        client = Client()
        assert error_of(client.get("/api/run", {"prompt": "x"})) == (
            401,
            "unauthenticated",
            "Log in first.",
        )
        client.force_login(user)
        assert client.get("/api/run", {"prompt": "x"}).status_code == 200
    assert seen == ["", "ada"]


def test_wsgi_post_needs_no_csrf_token(deployment: ScriptedDeployment) -> None:
    deployment.release.set()
    with _serving(deployment):
        response = Client(enforce_csrf_checks=True).post(
            "/api/run", {"prompt": "a dog"}, content_type="application/json"
        )
        assert response.status_code == 200
        body = b"".join(response.streaming_content)
    assert body.count(b"event: result") == 1
    assert deployment.calls[0]["parameters"] == {"prompt": "a dog"}


def test_wsgi_policy_errors(deployment: ScriptedDeployment) -> None:
    with _serving(deployment, max_upload_bytes=10):
        client = Client()
        assert error_of(client.get("/api/run")) == (
            400,
            "invalid_parameter",
            "missing required parameter 'prompt'",
        )
        too_large = client.post("/api/run", {"prompt": "a cat"}, content_type="application/json")
        assert error_of(too_large) == (413, "payload_too_large", "request body exceeds 10 bytes")
        put = client.put("/api/run")
        assert error_of(put) == (405, "method_not_allowed", "method PUT not allowed on /run")
        assert put["Allow"] == "GET, POST"
        assert error_of(client.get("/api/")) == (404, "not_found", "no such endpoint: /")
        assert json.loads(client.get("/api/health").content)["status"] == "ok"
        assert reverse("ikproxy:endpoint", args=["run"]) == "/api/run"
    assert deployment.calls == []


# -- ASGI: AsyncClient builds an ASGIRequest ------------------------------------------


@pytest.mark.anyio
async def test_asgi_streams_uncompressed_while_the_run_is_held(
    deployment: ScriptedDeployment,
) -> None:
    watchdog = threading.Timer(WATCHDOG, deployment.release.set)
    watchdog.start()
    try:
        with _serving(deployment):
            client = AsyncClient(headers={"Accept-Encoding": "gzip"})
            response = await client.get("/api/run", {"prompt": "a cat"})
            assert response.status_code == 200
            assert response["Content-Type"] == "text/event-stream; charset=utf-8"
            assert response["Content-Encoding"] == "identity"
            chunks = aiter(response.streaming_content)
            head = await aread_until(chunks, b"event: progress", 2)
            released_early = deployment.release.is_set()
            deployment.release.set()
            rest = b"".join([chunk async for chunk in chunks])
    finally:
        watchdog.cancel()
    assert not released_early, "the first events waited for the end of the run"
    assert head.startswith(b": ikproxy protocol 1\n")
    assert rest.count(b"event: result") == 1


@pytest.mark.anyio
async def test_asgi_sync_hooks_run_off_the_event_loop(
    deployment: ScriptedDeployment, user: User
) -> None:
    deployment.release.set()
    seen: list[tuple[str, str]] = []

    def authorize(request: Any) -> None:
        seen.append(("authorize", request.user.username))  # the ORM: refused on the loop
        if not request.user.is_authenticated:
            raise AccessDenied(401, "Log in first.")

    def rate_limit_key(request: Any) -> str:
        seen.append(("key", request.user.username))
        return str(request.user.pk)

    limits = {"rate_limit": TokenBucket(rate=0.001, burst=1), "rate_limit_key": rate_limit_key}
    with _serving(deployment, authorize=authorize, **limits):
        client = AsyncClient()
        assert error_of(await client.get("/api/run", {"prompt": "x"})) == (
            401,
            "unauthenticated",
            "Log in first.",
        )
        await client.aforce_login(user)
        first = await client.get("/api/run", {"prompt": "x"})
        assert first.status_code == 200
        assert b"event: result" in b"".join([c async for c in first.streaming_content])
        second = await client.get("/api/run", {"prompt": "x"})
        assert second.status_code == 429
    assert seen == [
        ("authorize", ""),
        ("authorize", "ada"),
        ("key", "ada"),
        ("authorize", "ada"),
        ("key", "ada"),
    ]


@pytest.mark.anyio
async def test_asgi_async_hooks_run_on_the_loop(deployment: ScriptedDeployment) -> None:
    deployment.release.set()
    seen: list[bool] = []

    async def authorize(request: Any) -> None:
        seen.append((await request.auser()).is_authenticated)

    with _serving(deployment, authorize=authorize):
        response = await AsyncClient().get("/api/run", {"prompt": "x"})
        assert response.status_code == 200
        assert b"event: result" in b"".join([c async for c in response.streaming_content])
    assert seen == [False]


@pytest.mark.anyio
async def test_asgi_post_needs_no_csrf_token(deployment: ScriptedDeployment) -> None:
    deployment.release.set()
    with _serving(deployment, max_upload_bytes=100):
        client = AsyncClient(enforce_csrf_checks=True)
        response = await client.post(
            "/api/run",
            {"prompt": "a dog"},
            content_type="application/json",
            headers={"Accept": "application/x-ndjson"},
        )
        assert response.status_code == 200
        assert response["Content-Type"] == "application/x-ndjson"
        lines = [json.loads(line) async for line in _lines(response.streaming_content)]
        too_large = await client.post(
            "/api/run", {"prompt": "x" * 200}, content_type="application/json"
        )
    assert lines[-1]["type"] == "result"
    assert deployment.calls[0]["parameters"] == {"prompt": "a dog"}
    assert error_of(too_large) == (413, "payload_too_large", "request body exceeds 100 bytes")


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    body = b"".join([chunk async for chunk in chunks])
    for line in body.splitlines():
        yield line


@pytest.mark.anyio
async def test_asgi_disconnect_closes_the_run(deployment: ScriptedDeployment) -> None:
    """Django's own ASGI handler, driven as a server would, with a client that leaves."""
    left = anyio.Event()
    body_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if b"event: progress" in message.get("body", b""):
            left.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/run",
        "raw_path": b"/api/run",
        "query_string": b"prompt=x",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    with _serving(deployment):
        with anyio.fail_after(5):
            await ASGIHandler()(scope, receive, send)
    assert left.is_set()
    assert deployment.closed.is_set(), "the run went on after the client left"
    assert not deployment.release.is_set()


# -- configuration --------------------------------------------------------------------


def test_configuration_from_settings() -> None:
    config = {
        "DEPLOYMENT": f"{__name__}.SETTINGS_DEPLOYMENT",
        "POLICY": {"parameters": {"prompt": str}, "authorize": f"{__name__}.settings_authorize"},
    }
    with override_settings(IKPROXY=config):
        urls = ikproxy.adapters.django.urls()
    assert urls.app_name == "ikproxy"
    assert urls.proxy.deployment is SETTINGS_DEPLOYMENT
    assert urls.proxy.policy.authorize is settings_authorize
    assert list(urls.proxy.policy.parameters) == ["prompt"]


def test_a_deployment_factory_in_settings_is_called() -> None:
    with override_settings(IKPROXY={"DEPLOYMENT": lambda: SETTINGS_DEPLOYMENT}):
        assert ikproxy.adapters.django.urls().proxy.deployment is SETTINGS_DEPLOYMENT


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            None,
            "ikproxy.adapters.django.urls() needs a deployment, "
            "or settings.IKPROXY = {'DEPLOYMENT': ...}",
        ),
        (
            {"DEPLOYMENT": SETTINGS_DEPLOYMENT, "PARAMETERS": {}},
            "unknown key in settings.IKPROXY: 'PARAMETERS' (allowed: DEPLOYMENT, POLICY)",
        ),
        (
            {"DEPLOYMENT": 42},
            "settings.IKPROXY['DEPLOYMENT'] is not a deployment (an object with run_stream and run)",
        ),
    ],
)
def test_bad_settings_are_refused(config: Any, message: str) -> None:
    with override_settings(IKPROXY=config):
        urls = ikproxy.adapters.django.urls()  # the URLconf imports: no traceback there
        assert [(e.id, e.msg) for e in ikproxy.adapters.django.check_settings()] == (
            [] if config is None else [(CHECK_IDS[message[:20]], message)]
        )
    with pytest.raises(ImproperlyConfigured) as caught:
        urls.proxy.deployment  # noqa: B018
    assert str(caught.value) == message


CHECK_IDS = {"ikproxy.adapters.dja": "ikproxy.E001", "unknown key in setti": "ikproxy.E002"}
CHECK_IDS["settings.IKPROXY['DE"] = "ikproxy.E003"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            {"max_active_run": 1},
            [
                (
                    "ikproxy.E006",
                    "Policy option `max_active_run`: no such option; "
                    "did you mean `max_active_runs`?",
                )
            ],
        ),
        (
            {"rate_limit_key": "3/m", "rate_limit": "3/mn", "keepalive": 0},
            [
                (
                    "ikproxy.E005",
                    "settings.IKPROXY['POLICY']['rate_limit_key']: '3/m' is not an importable "
                    "dotted path (3/m doesn't look like a module path)",
                ),
                (
                    "ikproxy.E006",
                    "Policy option `rate_limit`: invalid rate '3/mn': expected N/unit with "
                    "N >= 1 and unit one of s, sec, second, m, min, minute, h, hour, d, day "
                    "(for example '3/minute'); did you mean '3/min'?",
                ),
                (
                    "ikproxy.E006",
                    "Policy option `keepalive`: must be a positive number of seconds, not 0",
                ),
            ],
        ),
        ({"rate_limit": "3/m", "max_active_runs": 1, "resume_window": 60}, []),
        (
            {"rate_limit": "3/mn", "keepalive": 0},
            [
                (
                    "ikproxy.E006",
                    "Policy option `rate_limit`: invalid rate '3/mn': expected N/unit with "
                    "N >= 1 and unit one of s, sec, second, m, min, minute, h, hour, d, day "
                    "(for example '3/minute'); did you mean '3/min'?",
                ),
                (
                    "ikproxy.E006",
                    "Policy option `keepalive`: must be a positive number of seconds, not 0",
                ),
            ],
        ),
    ],
)
def test_the_system_check_reports_each_policy_problem(
    policy: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    config = {"DEPLOYMENT": f"{__name__}.SETTINGS_DEPLOYMENT", "POLICY": policy}
    with override_settings(IKPROXY=config):
        found = [(e.id, e.msg) for e in ikproxy.adapters.django.check_settings()]
    assert found == expected
    if expected and expected[0][0] == "ikproxy.E006":  # the same text as Policy(...) gives
        with pytest.raises(PolicyError) as caught:
            Policy(**{k: v for k, v in policy.items() if k != "keepalive" or len(policy) == 1})
        assert str(caught.value) == expected[0][1]


def test_options_without_a_deployment_are_refused() -> None:
    with pytest.raises(TypeError) as caught:
        ikproxy.adapters.django.urls(parameters={"prompt": str})
    assert str(caught.value) == (
        "policy options need a deployment (or neither, to use settings.IKPROXY)"
    )

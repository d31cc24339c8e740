"""The proxy as a Django URLconf, for both the WSGI and the ASGI handler.

    from django.urls import include, path
    import ikproxy.adapters.django

    urlpatterns = [
        path("api/", include(ikproxy.adapters.django.urls(deployment, parameters={"prompt": str}))),
    ]

Or from settings, with `include(ikproxy.adapters.django.urls())`:

    IKPROXY = {
        "DEPLOYMENT": "myproject.ai.deployment",  # a deployment, or a callable returning one
        "POLICY": {"parameters": {"prompt": str}, "authorize": "myproject.ai.authorize"},
    }

`POLICY` holds the options of `ikproxy.policy.Policy`; `authorize`,
`rate_limit_key` and `store` (and `rate_limit` unless it is a rate such as
`"3/minute"`) may be given as dotted paths. The app name is `ikproxy`, so
`reverse("ikproxy:endpoint", args=["run"])` gives the run URL.

Add `"ikproxy.adapters.django.IkproxyConfig"` to `INSTALLED_APPS` and
`manage.py check` (which `runserver` and `migrate` run too) reports each
problem of `settings.IKPROXY` as an error `ikproxy.E00N` naming the key, the
problem and the nearest valid option, with the text `Policy(...)` gives. A
URLconf built from bad settings imports without error, and answers every
request with a 500 whose log line gives the same text.

One catch-all view hands every request under the prefix to the core. It is
an async view that streams under both handlers (Django buffers a stream whose
kind does not match the handler): under ASGI the run is iterated on the
server's event loop; under WSGI through the process-wide event loop thread
(`ikproxy.server.blocking_portal`), as a sync iterator. Under WSGI each open
stream holds a worker thread (use gunicorn `-k gthread`, not the sync worker),
and a client that left is noticed at the next write, within two keepalives.

Hooks receive Django's `HttpRequest`. Sync hooks run where sync Django code
runs: in the request thread under WSGI, and in Django's sync thread
(`sync_to_async`) under ASGI, so `request.user` and the ORM work in them.
Async hooks run on an event loop: use `await request.auser()` there.

The view is `csrf_exempt`: the API is called by scripts and by `fetch` from
your pages, and it has its own access control in the `authorize` hook. Streams
carry `Content-Encoding: identity`, which makes `GZipMiddleware` leave them
alone: on Django 5.2 it buffers a stream under WSGI and, under ASGI, compresses
each chunk as its own gzip member, which clients truncate to the first event.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import URLPattern, re_path
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt

from ikproxy.deployments import Deployment
from ikproxy.policy.checks import nearest
from ikproxy.policy.config import Policy, policy_problems
from ikproxy.proxy.core import Proxy, ProxyRequest, ProxyResponse, SyncProxyResponse

__all__ = ["IkproxyConfig", "ProxyURLs", "check_settings", "urls"]

_CHUNK = 64 * 1024
_SETTINGS_KEYS = ("DEPLOYMENT", "POLICY")
_IMPORTABLE = ("authorize", "rate_limit", "resume_rate_limit", "rate_limit_key", "store")
_NOT_A_DEPLOYMENT = (
    "settings.IKPROXY['DEPLOYMENT'] is not a deployment (an object with run_stream and run)"
)
#: Where the ASGI branch keeps the rate-limit key computed in Django's sync thread.
_KEY_ATTRIBUTE = "_ikproxy_rate_limit_key"


@dataclass(frozen=True)
class ProxyURLs:
    """What `include()` takes: the URL patterns, the app name, and the `Proxy` behind them."""

    urlpatterns: list[URLPattern]
    proxy: Proxy
    app_name: str = "ikproxy"


def urls(
    deployment: Deployment | None = None, *, policy: Policy | None = None, **options: Any
) -> ProxyURLs:
    """The proxy's URL patterns for `include()`: `run`, `health`, `ikproxy.js`, ...

    Policy options (`parameters=`, `authorize=`, ...) are those of
    `ikproxy.policy.Policy`. Without arguments, both come from `settings.IKPROXY`.
    """
    if deployment is None:
        if policy is not None or options:
            raise TypeError(
                "policy options need a deployment (or neither, to use settings.IKPROXY)"
            )
        try:
            deployment, options = _from_settings()
        except ImproperlyConfigured as exc:
            return _unconfigured(str(exc))
    proxy = Proxy(deployment, policy, **options)
    view = _endpoint(proxy)
    return ProxyURLs([re_path(r"^(?P<path>.*)\Z", view, name="endpoint")], proxy)


def _endpoint(proxy: Proxy) -> Callable[[HttpRequest, str], Awaitable[HttpResponseBase]]:
    on_loop = Proxy(proxy.deployment, _hooks_in_sync_thread(proxy.policy))

    def respond_sync(request: HttpRequest, path: str) -> HttpResponseBase:
        body = iter(partial(request.read, _CHUNK), b"")
        return _to_response(proxy.handle_sync(_proxy_request(request, path), body))

    async def endpoint(request: HttpRequest, path: str) -> HttpResponseBase:
        if isinstance(request, ASGIRequest):
            answer = await on_loop.handle(_proxy_request(request, path), _read(request))
            return _to_response(answer)
        # WSGI: this coroutine runs in a loop Django made for this request only;
        # the work goes back to the request thread, and the stream to the portal.
        return await sync_to_async(respond_sync, thread_sensitive=True)(request, path)

    view: Callable[[HttpRequest, str], Awaitable[HttpResponseBase]] = csrf_exempt(endpoint)
    return view


def _proxy_request(request: HttpRequest, path: str) -> ProxyRequest:
    return ProxyRequest(
        method=request.method or "GET",
        path="/" + path,
        query_string=request.META.get("QUERY_STRING", ""),
        headers=request.headers,
        client=request.META.get("REMOTE_ADDR"),
        native=request,
    )


async def _read(request: HttpRequest) -> AsyncIterator[bytes]:
    """The body in chunks. Django's ASGI handler has already spooled it to a file."""
    while chunk := request.read(_CHUNK):
        yield chunk


def _to_response(answer: ProxyResponse | SyncProxyResponse) -> HttpResponseBase:
    if isinstance(answer.body, bytes):
        return HttpResponse(answer.body, status=answer.status, headers=answer.headers)
    response = StreamingHttpResponse(answer.body, status=answer.status, headers=answer.headers)
    response["Content-Encoding"] = "identity"  # GZipMiddleware skips encoded responses
    return response


# -- hooks under the ASGI handler -------------------------------------------------


def _hooks_in_sync_thread(policy: Policy) -> Policy:
    """`policy` for the event loop: its sync hooks moved to Django's sync thread.

    Django refuses the ORM (and so a lazy `request.user`) on an event loop. The
    core awaits `authorize` but calls `rate_limit_key` inline, so the key is
    computed in the same step, right after `authorize` let the request in.
    """
    authorize = policy.authorize
    key_fn = policy.rate_limit_key if policy.keys_callers else None
    if key_fn is None and (authorize is None or iscoroutinefunction(authorize)):
        return policy

    async def admit(request: Any) -> bool | None:
        verdict = await _call_off_loop(authorize, request) if authorize is not None else None
        if key_fn is not None and verdict is not False:
            setattr(request, _KEY_ATTRIBUTE, await _call_off_loop(key_fn, request))
        return verdict

    def stored_key(request: Any) -> str:
        return getattr(request, _KEY_ATTRIBUTE)  # type: ignore[no-any-return]

    return dataclasses.replace(
        policy, authorize=admit, rate_limit_key=stored_key if key_fn is not None else None
    )


async def _call_off_loop(hook: Callable[[Any], Any], request: Any) -> Any:
    """Await an async hook; run a sync one in Django's sync thread."""
    if iscoroutinefunction(hook):
        return await hook(request)
    result = await sync_to_async(hook, thread_sensitive=True)(request)
    if inspect.isawaitable(result):
        result = await result
    return result


# -- settings ---------------------------------------------------------------------


class IkproxyConfig(AppConfig):  # type: ignore[misc]
    """The Django app of ikproxy: in `INSTALLED_APPS`, it registers the system checks of
    `settings.IKPROXY` (`check_settings`)."""

    name = "ikproxy.adapters.django"
    label = "ikproxy"
    verbose_name = "ikproxy"

    def ready(self) -> None:
        checks.register(check_settings, "ikproxy")


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The system check of `settings.IKPROXY`: one error per problem (none if unset).

    `ikproxy.E001` the setting's shape, `E002` an unknown key, `E003` the
    deployment, `E004` the `POLICY` mapping, `E005` a dotted path that does not
    import, `E006` a `Policy` option (the message `Policy(...)` gives).
    """
    from django.conf import settings

    if getattr(settings, "IKPROXY", None) is None:
        return []
    return [checks.Error(message, id=f"ikproxy.{code}") for code, message in _problems()[0]]


def _from_settings() -> tuple[Deployment, dict[str, Any]]:
    """The deployment and policy options of `settings.IKPROXY`; `ImproperlyConfigured` else."""
    problems, deployment, options = _problems()
    if problems:
        raise ImproperlyConfigured("; ".join(message for _, message in problems))
    assert deployment is not None
    if not isinstance(deployment, Deployment) and callable(deployment):
        deployment = deployment()
    if not isinstance(deployment, Deployment):
        raise ImproperlyConfigured(_NOT_A_DEPLOYMENT)
    return deployment, options


def _problems() -> tuple[list[tuple[str, str]], Any, dict[str, Any]]:
    """((check id, message) per problem, the deployment or its factory, the policy options)."""
    from django.conf import settings

    config = getattr(settings, "IKPROXY", None)
    if not isinstance(config, Mapping) or "DEPLOYMENT" not in config:
        message = (
            "ikproxy.adapters.django.urls() needs a deployment, "
            "or settings.IKPROXY = {'DEPLOYMENT': ...}"
        )
        return [("E001", message)], None, {}
    problems: list[tuple[str, str]] = []
    for key in config:
        if key not in _SETTINGS_KEYS:
            guess = nearest(str(key), _SETTINGS_KEYS)
            hint = f"did you mean {guess!r}?" if guess else "allowed: DEPLOYMENT, POLICY"
            problems.append(("E002", f"unknown key in settings.IKPROXY: {key!r} ({hint})"))
    deployment = _import_setting("settings.IKPROXY['DEPLOYMENT']", config["DEPLOYMENT"], problems)
    if (
        deployment is not None
        and not isinstance(deployment, Deployment)
        and not callable(deployment)
    ):
        problems.append(("E003", _NOT_A_DEPLOYMENT))
    raw = config.get("POLICY") or {}
    if not isinstance(raw, Mapping):
        problems.append(("E004", "settings.IKPROXY['POLICY'] is not a mapping of Policy options"))
        return problems, deployment, {}
    options = dict(raw)
    for key in _IMPORTABLE:
        value = options.get(key)
        if isinstance(value, str) and not (key.endswith("rate_limit") and "/" in value):
            where = f"settings.IKPROXY['POLICY']['{key}']"
            options[key] = _import_setting(where, value, problems)
    problems += [("E006", str(problem)) for problem in policy_problems(options)]
    return problems, deployment, options


def _import_setting(where: str, value: Any, problems: list[tuple[str, str]]) -> Any:
    """`value`, imported if it is a dotted path; a problem recorded (and None) if it fails."""
    if not isinstance(value, str):
        return value
    try:
        return import_string(value)
    except ImportError as exc:
        code = "E003" if where.endswith("['DEPLOYMENT']") else "E005"
        problems.append((code, f"{where}: {value!r} is not an importable dotted path ({exc})"))
        return None


class _Unconfigured:
    """Stands for the `Proxy` of a URLconf made from bad settings: any use raises."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __getattr__(self, name: str) -> Any:
        raise ImproperlyConfigured(self.message)


def _unconfigured(message: str) -> ProxyURLs:
    """URL patterns that answer every request with the configuration error (a 500)."""

    def endpoint(request: HttpRequest, path: str) -> HttpResponseBase:
        raise ImproperlyConfigured(message)

    view = csrf_exempt(endpoint)
    pattern = re_path(r"^(?P<path>.*)\Z", view, name="endpoint")
    return ProxyURLs([pattern], cast(Proxy, _Unconfigured(message)))

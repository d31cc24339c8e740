"""The settings of the test site (see the package docstring)."""

from __future__ import annotations

import os

from ikproxy.stores import RedisStore

DEBUG = False
SECRET_KEY = "test-site-only-not-a-secret"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.support.django_site.urls"
INSTALLED_APPS = ["ikproxy.adapters.django.IkproxyConfig"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
SESSION_COOKIE_SAMESITE = "Lax"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

_VIEWS = "tests.support.django_site.views"
_STORE = RedisStore(
    os.environ.get("IKPROXY_TEST_REDIS", "redis://127.0.0.1:1/0"),
    prefix=os.environ.get("IKPROXY_TEST_PREFIX", "site"),
)

IKPROXY = {
    "DEPLOYMENT": f"{_VIEWS}.deployment",
    "POLICY": {
        "parameters": {"events": int, "pace": float, "gate": str},
        "authorize": f"{_VIEWS}.signed_in",
        "rate_limit": "3/m",
        "rate_limit_key": f"{_VIEWS}.user_key",
        "max_active_runs": 1,
        "resume_window": 30,
        "store": _STORE,
        "keepalive": 1.0,
    },
}

if os.environ.get("IKPROXY_TEST_BAD"):
    IKPROXY = {
        "DEPLOYMENT": f"{_VIEWS}.deployment",
        "RATE_LIMIT": "3/m",  # not a key of IKPROXY: it goes in POLICY
        "POLICY": {
            "authorize": f"{_VIEWS}.no_such_hook",
            "rate_limit": "3/mn",
            "rate_limit_key": "3/m",  # a rate where a dotted path was expected
            "max_active_run": 1,
            "resume_window": 0,
        },
    }

#: Errors (with their traceback) on the server's stderr, which the tests show on failure.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["console"], "level": "ERROR"}},
}

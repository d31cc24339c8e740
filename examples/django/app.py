"""ikproxy in a Django project (in one file): the proxy at /api, a demo page at /.

    python examples/django/app.py --port 8000

Runs on the built-in demo deployment, or on Ikomia SCALE when IKOMIA_ENDPOINT
(and IKOMIA_TOKEN) are set. Set IKPROXY_EXAMPLE_KEY to require
`Authorization: Bearer <key>` on /api/run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, HttpRequest
from django.urls import include, path

import ikproxy
import ikproxy.adapters.django
from ikproxy.demo import from_env
from ikproxy.policy import AccessDenied, Param

INDEX = Path(__file__).resolve().parent.parent / "shared" / "index.html"

# In a regular project, this is settings.py.
settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret"),
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
    ],
)


def authorize(request: HttpRequest) -> None:
    """Your own authentication goes here (`request.user` works); this one checks a shared key."""
    key = os.environ.get("IKPROXY_EXAMPLE_KEY")
    if key and request.headers.get("Authorization") != f"Bearer {key}":
        raise AccessDenied(401, "Bearer key required.")


def index(request: HttpRequest) -> FileResponse:
    return FileResponse(INDEX.open("rb"), content_type="text/html; charset=utf-8")


# In a regular project, this is urls.py.
urlpatterns = [
    path("", index),
    path(
        "api/",
        include(
            ikproxy.adapters.django.urls(
                from_env(),
                authorize=authorize,
                parameters={"prompt": Param(str, required=True, max_length=500)},
            )
        ),
    ),
]


if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    settings.ALLOWED_HOSTS.append(args.host)
    execute_from_command_line([sys.argv[0], "runserver", f"{args.host}:{args.port}", "--noreload"])

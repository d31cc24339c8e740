"""The test site's hooks and sign-in view."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse

from ikproxy.model import Results
from ikproxy.policy import AccessDenied
from tests.support.store_app import PacedDeployment


class SiteDeployment(PacedDeployment):
    """The paced runs of the multi-process tests, as a whole `Deployment` (with `run`)."""

    async def run(self, *inputs: Any, **options: Any) -> Results:
        results = None
        async for progress in self.run_stream(*inputs, **options):
            results = progress.results or results
        assert results is not None
        return results


def deployment() -> SiteDeployment:
    return SiteDeployment()


def login(request: HttpRequest) -> HttpResponse:
    request.session["user"] = request.GET["user"]
    return HttpResponse("signed in")


def signed_in(request: Any) -> None:
    if not request.session.get("user"):
        raise AccessDenied(401, "Sign in first.")


def user_key(request: Any) -> str:
    return f"user:{request.session['user']}"

"""The sign-in view, and the proxy at /api/ from settings.IKPROXY."""

from __future__ import annotations

from django.urls import include, path

import ikproxy.adapters.django

from . import views

urlpatterns = [
    path("login", views.login),
    path("api/", include(ikproxy.adapters.django.urls())),
]

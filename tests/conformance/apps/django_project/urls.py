"""The proxy at /api/, through `include()`."""

from __future__ import annotations

from django.urls import include, path

import ikproxy.adapters.django

from .. import _config

urlpatterns = [
    path(
        _config.PREFIX.strip("/") + "/",
        include(ikproxy.adapters.django.urls(_config.deployment(), **_config.policy())),
    ),
]

"""The mountable ASGI app itself, mounted at /api in a Starlette app."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount

from ikproxy.asgi import create_app

from . import _config

app = Starlette(
    routes=[Mount(_config.PREFIX, app=create_app(_config.deployment(), **_config.policy()))]
)

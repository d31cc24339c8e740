"""The conformance app for Litestar, served by uvicorn.

uvicorn tests.conformance.apps.litestar_app:app --port 8000
"""

from __future__ import annotations

from litestar import Litestar

from ikproxy.adapters.litestar import router

from . import _config

app = Litestar(
    route_handlers=[router(_config.deployment(), path=_config.PREFIX, **_config.policy())]
)

"""The conformance app for Starlette, served by uvicorn.

uvicorn tests.conformance.apps.starlette_app:app --port 8000
"""

from __future__ import annotations

from starlette.applications import Starlette

from ikproxy.adapters.starlette import mount

from . import _config

app = Starlette(routes=[mount(_config.PREFIX, _config.deployment(), **_config.policy())])

"""The conformance app for Sanic, served by Sanic's own server.

sanic tests.conformance.apps.sanic_app:app --port 8000 --single-process
"""

from __future__ import annotations

from sanic import Sanic

from ikproxy.adapters.sanic import blueprint

from . import _config

app = Sanic("ikproxy_conformance")
app.blueprint(blueprint(_config.deployment(), url_prefix=_config.PREFIX, **_config.policy()))

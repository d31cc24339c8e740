"""The conformance app for Quart, served by Hypercorn.

hypercorn tests.conformance.apps.quart_app:app -b 127.0.0.1:8000
"""

from __future__ import annotations

from quart import Quart

from ikproxy.adapters.quart import blueprint

from . import _config

app = Quart(__name__)
app.register_blueprint(
    blueprint(_config.deployment(), url_prefix=_config.PREFIX, **_config.policy())
)

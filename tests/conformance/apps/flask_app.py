"""Flask at /api: the blueprint (`app`), and the WSGI mount of the ASGI app (`wsgi_mount_app`)."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from ikproxy.adapters.flask import blueprint
from ikproxy.wsgi import create_wsgi_app

from . import _config

app = Flask(__name__)
app.register_blueprint(
    blueprint(_config.deployment(), url_prefix=_config.PREFIX, **_config.policy())
)

wsgi_mount_app = Flask(__name__)
wsgi_mount_app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
    wsgi_mount_app.wsgi_app,
    {_config.PREFIX: create_wsgi_app(_config.deployment(), **_config.policy())},
)

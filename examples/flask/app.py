"""ikproxy in a Flask app: the proxy at /api, a demo page at /.

    python examples/flask/app.py --port 8000

Runs on the built-in demo deployment, or on Ikomia SCALE when IKOMIA_ENDPOINT
(and IKOMIA_TOKEN) are set. Set IKPROXY_EXAMPLE_KEY to require
`Authorization: Bearer <key>` on /api/run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from flask import Flask, Request, Response, send_file

from ikproxy.adapters.flask import blueprint
from ikproxy.demo import from_env
from ikproxy.policy import AccessDenied, Param

INDEX = Path(__file__).resolve().parent.parent / "shared" / "index.html"


def authorize(request: Request) -> None:
    """Your own authentication goes here; this one checks a shared key, if one is set."""
    key = os.environ.get("IKPROXY_EXAMPLE_KEY")
    if key and request.headers.get("Authorization") != f"Bearer {key}":
        raise AccessDenied(401, "Bearer key required.")


app = Flask(__name__)
app.register_blueprint(
    blueprint(
        from_env(),
        url_prefix="/api",
        authorize=authorize,
        parameters={"prompt": Param(str, required=True, max_length=500)},
    )
)


@app.get("/")
def index() -> Response:
    return send_file(INDEX)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # Each open stream holds one thread: serve threaded (in production: gunicorn -k gthread).
    app.run(host=args.host, port=args.port, threaded=True)

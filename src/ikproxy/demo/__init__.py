"""The demo: a local deployment that paints images with Pillow, and the app that serves it.

`tasks` holds the deployment (`ikproxy.demo.deployment`, its tasks `generate`
and `edges`); `app` builds the web app `ikproxy demo` runs, with its page.
"""

from __future__ import annotations

from ikproxy.demo.tasks import (
    MAX_IMAGE_SIDE,
    MAX_PROMPT_LENGTH,
    create_deployment,
    deployment,
    edges,
    from_env,
    generate,
)

__all__ = [
    "MAX_IMAGE_SIDE",
    "MAX_PROMPT_LENGTH",
    "create_deployment",
    "deployment",
    "edges",
    "from_env",
    "generate",
]

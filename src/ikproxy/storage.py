"""Deprecated alias of `ikproxy.deployments.scale.storage`, where `ikproxy.storage` moved.

It warns on import and goes away in the next release.
"""

from __future__ import annotations

from ikproxy.deployments.scale.storage import *  # noqa: F403
from ikproxy.deployments.scale.storage import __all__ as __all__
from ikproxy.deprecation import warn_moved

warn_moved(__name__)

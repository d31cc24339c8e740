"""Deprecated alias of `ikproxy.proxy.openapi`, where `ikproxy.openapi` moved.

It warns on import and goes away in the next release.
"""

from __future__ import annotations

from ikproxy.deprecation import warn_moved
from ikproxy.proxy.openapi import *  # noqa: F403
from ikproxy.proxy.openapi import __all__ as __all__

warn_moved(__name__)

"""Deprecated alias of `ikproxy.proxy.uploads`, where `ikproxy.uploads` moved.

It warns on import and goes away in the next release.
"""

from __future__ import annotations

from ikproxy.deprecation import warn_moved
from ikproxy.proxy.uploads import *  # noqa: F403
from ikproxy.proxy.uploads import __all__ as __all__

warn_moved(__name__)

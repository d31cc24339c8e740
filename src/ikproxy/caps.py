"""Deprecated alias of `ikproxy.runs.caps`, where `ikproxy.caps` moved.

It warns on import and goes away in the next release.
"""

from __future__ import annotations

from ikproxy.deprecation import warn_moved
from ikproxy.runs.caps import *  # noqa: F403
from ikproxy.runs.caps import __all__ as __all__

warn_moved(__name__)

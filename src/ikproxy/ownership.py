"""Deprecated alias of `ikproxy.runs.ownership`, where `ikproxy.ownership` moved.

It warns on import and goes away in the next release.
"""

from __future__ import annotations

from ikproxy.deprecation import warn_moved
from ikproxy.runs.ownership import *  # noqa: F403
from ikproxy.runs.ownership import __all__ as __all__

warn_moved(__name__)

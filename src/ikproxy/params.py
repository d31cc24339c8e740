"""Deprecated alias of `ikproxy.policy.params`, where `ikproxy.params` moved.

It warns on import and goes away in the next release.
"""

from __future__ import annotations

from ikproxy.deprecation import warn_moved
from ikproxy.policy.params import *  # noqa: F403
from ikproxy.policy.params import __all__ as __all__

warn_moved(__name__)

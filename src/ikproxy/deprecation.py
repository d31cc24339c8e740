"""Module paths that moved: each old path stays one release as an alias that warns."""

from __future__ import annotations

import warnings

__all__ = ["MOVED", "warn_moved"]

#: Every module path that moved in 0.2, with its new home; the old path warns for one release.
MOVED: dict[str, str] = {
    "ikproxy.caps": "ikproxy.runs.caps",
    "ikproxy.images": "ikproxy.proxy.images",
    "ikproxy.openapi": "ikproxy.proxy.openapi",
    "ikproxy.outputs": "ikproxy.proxy.outputs",
    "ikproxy.ownership": "ikproxy.runs.ownership",
    "ikproxy.params": "ikproxy.policy.params",
    "ikproxy.parsing": "ikproxy.proxy.parsing",
    "ikproxy.sealed": "ikproxy.runs.sealed",
    "ikproxy.storage": "ikproxy.deployments.scale.storage",
    "ikproxy.uploads": "ikproxy.proxy.uploads",
}


def warn_moved(old: str) -> None:
    """Warn that module `old` moved, with a `DeprecationWarning` naming its new path."""
    warnings.warn(
        f"{old} moved to {MOVED[old]}; the old path goes away in the next release",
        DeprecationWarning,
        stacklevel=3,
    )

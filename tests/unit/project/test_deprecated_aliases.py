"""The module paths that moved in 0.2 stay as aliases that warn, each in a fresh interpreter
(a module warns once, when first imported): `-W error` turns the warning into the import's
failure, naming the new path; otherwise the alias hands out the new module's objects."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ikproxy.deprecation import MOVED

ALIASES = sorted(MOVED)


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_every_moved_path_is_listed() -> None:
    assert ALIASES == [
        "ikproxy.caps",
        "ikproxy.images",
        "ikproxy.openapi",
        "ikproxy.outputs",
        "ikproxy.ownership",
        "ikproxy.params",
        "ikproxy.parsing",
        "ikproxy.sealed",
        "ikproxy.storage",
        "ikproxy.uploads",
    ]


@pytest.mark.parametrize("old", ALIASES)
def test_the_old_path_fails_under_w_error_naming_the_new_one(old: str) -> None:
    done = _python("-W", "error::DeprecationWarning", "-c", f"import {old}")
    assert done.returncode != 0
    assert "DeprecationWarning" in done.stderr
    assert f"{old} moved to {MOVED[old]}; the old path goes away in the next release" in done.stderr


CHECK = """
import importlib, json, sys, warnings
old, new = sys.argv[1], sys.argv[2]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    alias = importlib.import_module(old)
module = importlib.import_module(new)
names = list(getattr(module, "__all__", []))
print(json.dumps({
    "warnings": [(w.category.__name__, str(w.message)) for w in caught],
    "names": names,
    "missing": [n for n in names if not hasattr(alias, n)],
    "different": [n for n in names if hasattr(alias, n) and getattr(alias, n) is not getattr(module, n)],
}))
"""


@pytest.mark.parametrize("old", ALIASES)
def test_the_old_path_warns_once_and_hands_out_the_new_modules_objects(old: str) -> None:
    done = _python("-c", CHECK, old, MOVED[old])
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["warnings"] == [
        [
            "DeprecationWarning",
            f"{old} moved to {MOVED[old]}; the old path goes away in the next release",
        ]
    ]
    assert seen["names"], f"{MOVED[old]} has no __all__"
    assert seen["missing"] == []
    assert seen["different"] == []


def test_the_new_paths_import_without_any_warning() -> None:
    modules = sorted(set(MOVED.values()))
    done = _python("-W", "error", "-c", "import " + ", ".join(modules))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""

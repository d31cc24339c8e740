"""A virtual environment with Django 6, which needs Python 3.12+, for the Django conformance app.

The main environment may run an older Python with Django 5.2; the conformance
suite runs the same Django project under Django 6 with this environment's
interpreter. It is created on first use (a few minutes: it installs ikproxy,
Django, uvicorn and gunicorn from the package index) and reused afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-django6"
#: Written once the environment is complete, so a half-made one is rebuilt.
READY = VENV / ".ikproxy-ready"
PACKAGES = ["django>=6", "uvicorn", "gunicorn"]
_CHECK = "import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)"


def python() -> str | None:
    """The environment's interpreter (created if missing), or None without a Python 3.12+."""
    interpreter = VENV / "bin" / "python"
    if READY.exists() and interpreter.exists():
        return str(interpreter)
    base = find_base_python()
    if base is None:
        return None
    subprocess.run([base, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [str(interpreter), "-m", "pip", "install", "--quiet", "-e", str(ROOT), *PACKAGES],
        check=True,
    )
    READY.write_text("ok\n")
    return str(interpreter)


def find_base_python() -> str | None:
    """A Python 3.12 or newer: pyenv's versions first (oldest first), then the PATH."""
    candidates = sorted(
        glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python")),
        key=_version_key,
    )
    candidates += [
        found
        for name in ("python3.12", "python3.13", "python3.14", "python3")
        if (found := shutil.which(name))
    ]
    for candidate in candidates:
        try:
            done = subprocess.run([candidate, "-c", _CHECK], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return candidate
    return None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parents[1].name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


if __name__ == "__main__":
    found = python()
    print(found or "no Python 3.12+ found")
    sys.exit(0 if found else 1)

"""A virtual environment with the official SCALE client, `ikomia-client` 0.4.2, for fidelity tests.

Created on first use from the package index (about 30 s: the client pulls in
numpy and Pillow) and reused afterwards, rebuilt when the pin changes.
"""

from __future__ import annotations

import subprocess
import sys

from .servers import ROOT

VENV = ROOT / ".venv-ikclient"
#: Written once the environment is complete, so a half-made one is rebuilt.
READY = VENV / ".ikproxy-ready"
PACKAGES = ["ikomia-client==0.4.2"]


def python() -> str:
    """The environment's interpreter, created if missing."""
    interpreter = VENV / "bin" / "python"
    ready = READY.exists() and READY.read_text().split() == PACKAGES
    if ready and interpreter.exists():
        return str(interpreter)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [
            str(interpreter),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *PACKAGES,
        ],
        check=True,
    )
    READY.write_text(" ".join(PACKAGES) + "\n")
    return str(interpreter)


if __name__ == "__main__":
    print(python())

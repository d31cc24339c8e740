"""What importing the codecs loads, in a fresh interpreter: the sans-I/O codecs need none of
the HTTP client, the async runtime, the web framework or the imaging library."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("httpx", "anyio", "starlette", "PIL")

CHECK = f"""
import json, sys
import ikproxy.codecs.sse, ikproxy.codecs.ndjson
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def test_the_codecs_load_no_heavy_dependency() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []

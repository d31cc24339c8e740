"""The codecs against their peers, side by side in one run.

    ./dev bench codecs            # or: .venv/bin/python benchmarks/codecs.py

SSE: ikproxy against sse-starlette (encode) and httpx-sse (decode, driven the
way `EventSource.iter_sse` drives it). NDJSON: ikproxy's framing overhead over
the JSON library's own speed (orjson and stdlib json).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _ndjson
import _sse


def main() -> None:
    print("== Server-Sent Events ==")
    _sse.main()
    print()
    print("== NDJSON ==")
    _ndjson.main()


if __name__ == "__main__":
    main()

"""Copy the browser module and its types from the installed ikproxy next to each component.

    python examples/frontends/sync_module.py            # into react/, vue/ and svelte/
    python examples/frontends/sync_module.py src/lib    # into your own front end

The package is the single source of the module; a running server also serves
it at /api/ikproxy.js and /api/ikproxy.d.ts.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = ("ikproxy.js", "ikproxy.d.ts")


def sync(targets: list[Path]) -> None:
    static = resources.files("ikproxy").joinpath("static")
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            (target / name).write_bytes(static.joinpath(name).read_bytes())
        print(f"copied {', '.join(FILES)} to {target}")


if __name__ == "__main__":
    sync([Path(arg) for arg in sys.argv[1:]] or [HERE / "react", HERE / "vue", HERE / "svelte"])

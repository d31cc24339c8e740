"""Shared fixtures, the Hypothesis profiles, and the markers each folder gives its tests.

The folders say what a test needs, and so which marker it gets (never by hand):

- `tests/unit/<layer>/`: in process, one module or layer: `unit` and `matrix`.
  A uvicorn server in a thread of the test process, or a short fresh interpreter
  (`python -c`), is in process enough; a server process, Redis or a browser is not.
- `tests/integration/library/`: the library's behaviour that needs a server process or
  a real Redis: `integration` and `matrix` (it depends on the Python version too).
- `tests/integration/{deployments,browser,tooling}/` and `tests/conformance/`:
  multi-process deployments, Chromium, npm, the wheel, the command line, every real
  server: `integration` only (they exercise servers and tools more than the Python).
- `tests/docs/`: the documentation's code blocks, run as written: `docs`.

`./dev test -m unit` runs the fast tests; `./dev matrix` runs `-m matrix` on every
other supported Python.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# `ci`: derandomized and modest, the default. `fuzz`: long and random, for a session of
# hunting (HYPOTHESIS_PROFILE=fuzz ./dev test tests/unit/codecs/test_fuzz_codecs.py tests/unit/proxy/test_fuzz_parsing.py).
settings.register_profile("ci", derandomize=True, max_examples=100, deadline=None, print_blob=True)
# `matrix`: what `./dev matrix` uses on the other Pythons (the default one runs `ci`).
settings.register_profile(
    "matrix", derandomize=True, max_examples=25, deadline=None, print_blob=True
)
settings.register_profile(
    "fuzz",
    max_examples=20_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server shared by the session's tests (each test uses its own prefix)."""
    from .support.redis import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


HERE = Path(__file__).resolve().parent

#: Markers by folder (the first folders under tests/ that match).
MARKERS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("unit",): ("unit", "matrix"),
    ("integration", "library"): ("integration", "matrix"),
    ("integration",): ("integration",),
    ("conformance",): ("integration",),
    ("docs",): ("docs",),
}


def markers_of(path: Path) -> tuple[str, ...]:
    """The markers of a test file, from its folder under tests/."""
    parts = path.resolve().relative_to(HERE).parts[:-1]
    for prefix, markers in MARKERS.items():
        if parts[: len(prefix)] == prefix:
            return markers
    return ()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name in markers_of(item.path):
            item.add_marker(name)

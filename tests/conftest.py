from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# `ci`: derandomized and modest, the default. `fuzz`: long and random, for a session of
# hunting (HYPOTHESIS_PROFILE=fuzz ./dev test tests/test_fuzz_codecs.py tests/test_fuzz_parsing.py).
settings.register_profile("ci", derandomize=True, max_examples=100, deadline=None, print_blob=True)
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
    from ._redis import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url

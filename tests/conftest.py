from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server shared by the session's tests (each test uses its own prefix)."""
    from ._redis import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url

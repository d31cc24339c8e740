from __future__ import annotations

import os

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

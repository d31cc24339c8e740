"""pytest fixtures for a fake Ikomia SCALE server.

Enable them in a `conftest.py` at the root of your tests::

    pytest_plugins = ["ikproxy.testing.pytest_plugin"]

* `fake_scale`: a fresh `FakeScale` per test. Options for it go in a marker:
  `@pytest.mark.fake_scale(polls_before_done=0, legacy=True)`.
* `fake_scale_url`: that same fake served on loopback by uvicorn; the URL is
  both the SCALE API URL and the endpoint URL, and the token is `fake_scale.token`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ikproxy.testing._fake import FakeScale

__all__ = ["fake_scale", "fake_scale_url"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fake_scale(**options): keyword arguments for the fake_scale fixture's FakeScale"
    )


@pytest.fixture
def fake_scale(request: pytest.FixtureRequest) -> FakeScale:
    """A fresh fake SCALE server (not listening: use its `transport()`, or `fake_scale_url`)."""
    marker = request.node.get_closest_marker("fake_scale")
    return FakeScale(**(marker.kwargs if marker is not None else {}))


@pytest.fixture
def fake_scale_url(fake_scale: FakeScale) -> Iterator[str]:
    """The URL of `fake_scale`, served on 127.0.0.1 for the duration of the test."""
    with fake_scale.serve() as url:
        yield url

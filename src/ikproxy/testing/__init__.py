"""A fake Ikomia SCALE server, for your tests and ours.

`FakeScale` speaks the real protocol (JWT exchange, workflow, run, polling with
advice, long polling, HTTP 520 for a failed workflow, and SCALE storage for
video, file and folder inputs and stored outputs) on one ASGI app, records
every request, and can be told to fail or drop the next requests of a kind::

    from ikproxy.testing import FakeScale

    fake = FakeScale(polls_before_done=3)
    fake.fail("poll", 503)                       # the first poll answers 503
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://fake") as http:
        ...                                      # or: with fake.serve() as url: ...
    assert fake.count("run") == 1

Run one from a shell with `python -m ikproxy.testing --port 8765`, or get the
`fake_scale` and `fake_scale_url` fixtures with
`pytest_plugins = ["ikproxy.testing.pytest_plugin"]`.
"""

from __future__ import annotations

from ikproxy.testing._fake import FakeScale, Fault
from ikproxy.testing._png import TINY_PNG
from ikproxy.testing._recording import KINDS, Kind, RecordedRequest
from ikproxy.testing._storage import FakeStorage, StoredObject
from ikproxy.testing._transport import ConnectionDropped
from ikproxy.testing._workflow import default_workflow

__all__ = [
    "KINDS",
    "TINY_PNG",
    "ConnectionDropped",
    "FakeScale",
    "FakeStorage",
    "Fault",
    "Kind",
    "RecordedRequest",
    "StoredObject",
    "default_workflow",
]

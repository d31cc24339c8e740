"""Runs beyond one connection: followed, resumed and capped, in one process or many.

`registry` keeps each run's log so a client that lost its connection picks it
up again; `ownership` decides which instance streams a shared run (a lease) and
lets another take it over; `caps` holds the active-run limit per client;
`sealed` makes resume ids that need no store at all. What they keep lives in
a store (`ikproxy.stores`).
"""

from __future__ import annotations

from ikproxy.protocol import parse_position
from ikproxy.runs.registry import LogWriter, RunLog, RunRegistry, SharedRun, StoredRun

__all__ = ["LogWriter", "RunLog", "RunRegistry", "SharedRun", "StoredRun", "parse_position"]

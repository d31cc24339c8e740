"""`python -m ikproxy`: the `ikproxy` command line (see `ikproxy.cli`)."""

from __future__ import annotations

from ikproxy.cli import main

raise SystemExit(main())

"""A Django site as a new user sets it up: sign-in, "3 runs a minute" per user, one active
run per user, resumable runs, gunicorn with two workers and a Redis store.

The site is `tests/support/django_site` (settings.IKPROXY, read at start-up). What
is shown: only accepted runs are charged (refusals of every kind cost nothing),
a resume after the three runs of the minute is not a fourth run, runs asked for
by another site are refused even with the session cookie, and `manage.py check`
names each misconfiguration.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ROOT, free_port, running_server

SITE = "tests.support.django_site"
#: A page of another site, in a browser holding the user's session cookie.
CROSS_SITE = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "DJANGO_SETTINGS_MODULE": f"{SITE}.settings", **extra}


@pytest.fixture(scope="module")
def site(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site under gunicorn (2 gthread workers) on a fresh key prefix of a real Redis."""
    port = free_port()
    directory = tmp_path_factory.mktemp("django-site")
    args = ["-m", "gunicorn", "-k", "gthread", "--threads", "8", "-w", "2"]
    args += ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "2", "--chdir", str(directory)]
    env = _env(IKPROXY_TEST_REDIS=redis_url, IKPROXY_TEST_PREFIX=f"dj{secrets.token_hex(4)}")
    with running_server([*args, f"{SITE}.wsgi:application"], ready="Booting worker", env=env):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def _signed_in(site: str, user: str) -> Iterator[httpx.Client]:
    """A client holding `user`'s session cookie."""
    with httpx.Client(base_url=site, timeout=20) as client:
        assert client.get("/login", params={"user": user}).status_code == 200
        assert "sessionid" in client.cookies
        yield client


def _until(chunks: Iterator[bytes], marker: bytes, count: int = 1) -> bytes:
    seen = b""
    while seen.count(marker) < count:
        seen += next(chunks)
    return seen


def _codes(responses: list[httpx.Response]) -> list[tuple[int, str]]:
    return [(r.status_code, r.json()["error"]["code"]) for r in responses]


def test_three_runs_a_minute_then_a_resume_and_refusals_cost_nothing(
    site: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with (
        httpx.Client(base_url=site, timeout=20) as anonymous,
        _signed_in(site, "alice") as alice,
        _signed_in(site, "bob") as bob,
    ):
        refused = [anonymous.get("/api/run", params={"events": 1}) for _ in range(2)]
        refused += [alice.get("/api/run", params={"events": "many"}) for _ in range(2)]
        assert _codes(refused) == [(401, "unauthenticated")] * 2 + [(400, "invalid_parameter")] * 2

        # Run 1, held at its gate: alice's one active run.
        params = {"events": 1, "gate": str(gate)}
        with alice.stream("GET", "/api/run", params=params) as held:
            assert held.status_code == 200
            chunks = held.iter_bytes()
            _until(chunks, b"event: progress")
            capped = [alice.get("/api/run", params={"events": 1}) for _ in range(2)]
            assert _codes(capped) == [(429, "too_many_runs")] * 2
            cross = [
                alice.get("/api/run", params={"events": 1}, headers=CROSS_SITE),
                alice.post("/api/run", data={"events": "1"}, headers=CROSS_SITE),
                # A link on another site: a top-level GET, which Lax cookies go with.
                alice.get("/api/run?events=1", headers={"Sec-Fetch-Site": "cross-site"}),
            ]
            assert _codes(cross) == [(403, "cross_site")] * 3
            gate.touch()
            assert b"event: result" in _until(chunks, b"event: result")

        # Run 2, to its end; run 3, cut after two events (it goes on without its client).
        assert b"event: result" in alice.get("/api/run", params={"events": 2}).content
        with alice.stream("GET", "/api/run", params={"events": 20, "pace": 0.05}) as cut:
            assert cut.status_code == 200
            head = _until(cut.iter_bytes(), b"\nid: ", 2).decode()
        last_id = [line[4:] for line in head.splitlines() if line.startswith("id: ")][-1]

        # Three runs this minute: the resume is no fourth run, and it may go to either worker.
        resumed = alice.get("/api/run", headers={"Last-Event-ID": last_id})
        assert resumed.status_code == 200
        assert b"event: result" in resumed.content
        assert f"id: {last_id}\n".encode() not in resumed.content  # from where it was cut

        fourth = alice.get("/api/run", params={"events": 1})
        assert _codes([fourth]) == [(429, "rate_limited")]
        assert 1 <= int(fourth.headers["retry-after"]) <= 20  # a token every 20 s
        assert bob.get("/api/run", params={"events": 1}).status_code == 200  # per user


def _check(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", f"{SITE}.manage", "check"]
    env = {**os.environ, **_env(**extra)}
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_manage_py_check_reports_each_misconfiguration(tmp_path: Path) -> None:
    good = _check(tmp_path)
    assert good.returncode == 0, good.stderr
    assert "System check identified no issues" in good.stdout
    bad = _check(tmp_path, IKPROXY_TEST_BAD="1")
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    errors = [line for line in bad.stderr.splitlines() if line.startswith("?: (ikproxy.")]
    assert errors == [
        "?: (ikproxy.E002) unknown key in settings.IKPROXY: 'RATE_LIMIT' "
        "(allowed: DEPLOYMENT, POLICY)",
        "?: (ikproxy.E005) settings.IKPROXY['POLICY']['authorize']: "
        f"'{SITE}.views.no_such_hook' is not an importable dotted path "
        f'(Module "{SITE}.views" does not define a "no_such_hook" attribute/class)',
        "?: (ikproxy.E005) settings.IKPROXY['POLICY']['rate_limit_key']: '3/m' is not an "
        "importable dotted path (3/m doesn't look like a module path)",
        "?: (ikproxy.E006) Policy option `max_active_run`: no such option; "
        "did you mean `max_active_runs`?",
        "?: (ikproxy.E006) Policy option `rate_limit`: invalid rate '3/mn': expected N/unit "
        "with N >= 1 and unit one of s, sec, second, m, min, minute, h, hour, d, day "
        "(for example '3/minute'); did you mean '3/min'?",
        "?: (ikproxy.E006) Policy option `resume_window`: must be a positive number of "
        "seconds, not 0",
    ]

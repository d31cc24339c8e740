"""The sdist and the wheel as a release builds them, and the wheel as users install it.

`python -m build` makes the sdist, then the wheel from the sdist, once per
session. Their contents and metadata are checked, `twine check` must pass, and
the wheel is installed with the `fastapi`, `flask` and `server` extras into a
fresh virtual environment, outside the repository. There, each server snippet
of the README's "Ten lines of server" section runs under a real server
(uvicorn for ASGI, werkzeug for WSGI) and streams a run to its `result` event.

The snippets name a SCALE endpoint (`Client("https://your-endpoint...")`): the
test runs the fake SCALE server of the installed wheel (`python -m
ikproxy.testing`) on loopback, puts its URL in place of every `https://` URL
in the snippet, and points `IKOMIA_URL` and `IKOMIA_TOKEN` at it, so the
snippet's own `Client` code runs as written.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import Parser
from pathlib import Path

import httpx
import pytest

from ikproxy.codecs.sse import SSEDecoder
from tests.support.servers import ROOT, free_port, running_server

README = (ROOT / "README.md").read_text()
FAKE_TOKEN = "wheel-test-token"
PYTHONS = ("3.10", "3.11", "3.12", "3.13")

STATIC = ("ikproxy.js", "ikproxy.d.ts", "demo.html", "demo.css", "demo.js")
URL_NAMES = ("Homepage", "Documentation", "Source", "Issues", "Changelog")
FRAMEWORKS = ("AsyncIO", "Django", "FastAPI", "Flask")

#: Serves the `app` of a module file with uvicorn (ASGI) or werkzeug (WSGI).
SERVE = """
import importlib.util, inspect, sys
path, port = sys.argv[1], int(sys.argv[2])
spec = importlib.util.spec_from_file_location("snippet", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
app = module.app
if inspect.iscoroutinefunction(type(app).__call__):
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=port)
else:
    from werkzeug.serving import run_simple
    run_simple("127.0.0.1", port, app, threaded=True)
"""
READY = r"Uvicorn running on|Running on http"


def server_snippets() -> list[str]:
    """The fenced python blocks of the README's "Ten lines of server" section."""
    section = re.search(r"^## Ten lines of server\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert section is not None, "README has no '## Ten lines of server' section"
    return re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)


def _snippet_id(code: str) -> str:
    framework = re.search(r"^from (\w+) import", code, re.M)
    return framework.group(1) if framework else "snippet"


SNIPPETS = server_snippets()
assert SNIPPETS, "no ```python block in the README's 'Ten lines of server' section"


# -- the artifacts -----------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dist(sdist, wheel)


def _unwanted(name: str) -> bool:
    parts = name.split("/")
    return (
        "tests" in parts
        or "__pycache__" in parts
        or any(part.startswith(".venv") for part in parts)
        or name.endswith(".pyc")
    )


def test_the_wheel_holds_the_package_and_its_files_only(dist: Dist) -> None:
    names = zipfile.ZipFile(dist.wheel).namelist()
    for static in STATIC:
        assert f"ikproxy/static/{static}" in names
    assert "ikproxy/py.typed" in names
    assert "ikproxy/testing/__init__.py" in names
    assert [name for name in names if _unwanted(name)] == []
    top = {name.split("/")[0] for name in names}
    assert top == {"ikproxy", dist.wheel.name.split("-py3")[0] + ".dist-info"}


def test_the_sdist_holds_the_sources_and_no_build_debris(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    for static in STATIC:
        assert f"src/ikproxy/static/{static}" in names
    for name in ("src/ikproxy/py.typed", "pyproject.toml", "README.md", "LICENSE", "PKG-INFO"):
        assert name in names
    assert [name for name in names if _unwanted(name)] == []


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


def test_the_metadata_names_urls_pythons_frameworks_and_license(dist: Dist) -> None:
    meta = _metadata(dist.wheel)
    urls = dict(entry.split(", ", 1) for entry in meta.get_all("Project-URL", []))
    assert set(urls) == set(URL_NAMES)
    assert all(url.startswith("https://") for url in urls.values())
    classifiers = set(meta.get_all("Classifier", []))
    for version in PYTHONS:
        assert f"Programming Language :: Python :: {version}" in classifiers
    for framework in FRAMEWORKS:
        assert f"Framework :: {framework}" in classifiers
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["Description-Content-Type"] == "text/markdown"
    with zipfile.ZipFile(dist.wheel) as archive:
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())


def test_twine_check_passes_on_both(dist: Dist) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dist.sdist), str(dist.wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2


# -- the wheel, installed ------------------------------------------------------------------


@pytest.fixture(scope="session")
def venv_python(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel and three of its extras (pip's cache reused)."""
    venv = tmp_path_factory.mktemp("wheel-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"{dist.wheel}[fastapi,flask,server]"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=venv,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def _outside(python: Path) -> dict[str, str | None]:
    """An environment in which the repository's sources cannot be imported."""
    return {"PYTHONPATH": None, "IKOMIA_ENDPOINT": None, "VIRTUAL_ENV": str(python.parents[1])}


def test_the_installed_package_is_the_wheel(venv_python: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(venv_python), "-c", "import ikproxy; print(ikproxy.__file__, ikproxy.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    where, version = done.stdout.split()
    assert Path(where).is_relative_to(venv_python.parents[1])
    assert version == __import__("ikproxy").__version__


@pytest.fixture(scope="module")
def fake_scale(venv_python: Path) -> Iterator[str]:
    """The installed wheel's fake SCALE server, on a free loopback port."""
    port = free_port()
    args = [str(venv_python), "-m", "ikproxy.testing", "--port", str(port)]
    args += ["--token", FAKE_TOKEN, "--next-poll-in", "50"]
    with running_server(args, ready="Fake Ikomia SCALE server running", env=_outside(venv_python)):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("code", SNIPPETS, ids=[_snippet_id(code) for code in SNIPPETS])
def test_a_readme_server_snippet_streams_a_run_end_to_end(
    code: str, venv_python: Path, fake_scale: str, tmp_path: Path
) -> None:
    app = tmp_path / "app.py"
    app.write_text(re.sub(r"""(["'])https://[^"']*\1""", repr(fake_scale), code))
    serve = tmp_path / "serve.py"
    serve.write_text(SERVE)
    port = free_port()
    env = _outside(venv_python) | {"IKOMIA_URL": fake_scale, "IKOMIA_TOKEN": FAKE_TOKEN}
    args = [str(venv_python), str(serve), str(app), str(port)]
    with (
        running_server(args, ready=READY, env=env),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        assert http.get("/api/health").json()["status"] == "ok"
        module = http.get("/api/ikproxy.js")
        assert module.status_code == 200
        assert "processStreamingResponse" in module.text
        response = http.get("/api/run", params={"prompt": "a lighthouse at dusk"})
    assert response.status_code == 200, response.text
    decoder = SSEDecoder()
    events = decoder.feed(response.content) + decoder.close()
    kinds = [event.event for event in events]
    assert kinds[-1] == "result", kinds
    assert set(kinds[:-1]) == {"progress"}
    assert '"image"' in events[-1].data

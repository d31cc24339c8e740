"""The browser module is one source: the npm package in `js/` is what every server serves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
import zipfile
from importlib import resources
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

import ikproxy
from ikproxy.asgi import create_app
from ikproxy.demo import create_deployment
from tests.support.servers import ROOT

JS = ROOT / "js"
FILES = ("ikproxy.js", "ikproxy.d.ts")


@pytest.mark.parametrize("name", FILES)
def test_the_served_file_is_the_npm_packages_file(name: str) -> None:
    app = Starlette(routes=[Mount("/api", app=create_app(create_deployment()))])
    with TestClient(app) as client:
        served = client.get(f"/api/{name}")
    assert served.status_code == 200
    assert served.content == (JS / name).read_bytes()
    packaged = resources.files("ikproxy").joinpath("static", name).read_bytes()
    assert packaged == (JS / name).read_bytes()


def test_the_npm_package_follows_the_python_version() -> None:
    package = json.loads((JS / "package.json").read_text())
    assert package["name"] == "ikproxy"
    assert package["version"] == ikproxy.__version__


def test_the_npm_package_exports_the_module_and_its_types() -> None:
    package = json.loads((JS / "package.json").read_text())
    assert package["type"] == "module"
    assert package["sideEffects"] is False
    assert package["exports"]["."] == {"types": "./ikproxy.d.ts", "default": "./ikproxy.js"}
    assert set(FILES) <= set(package["files"])
    for name in FILES:
        assert (JS / name).is_file()


def test_the_wheel_carries_the_npm_packages_files(tmp_path: Path) -> None:
    root = JS.parent
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("ikproxy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in FILES:
            assert archive.read(f"ikproxy/static/{name}") == (JS / name).read_bytes()


def test_the_examples_lockfile_has_the_same_version() -> None:
    lock = json.loads((JS.parent / "examples" / "frontends" / "package-lock.json").read_text())
    assert lock["packages"]["../../js"]["version"] == ikproxy.__version__


def test_npm_pack_ships_the_module_its_types_and_nothing_else() -> None:
    npm = shutil.which("npm")
    assert npm, "npm is missing: `./dev test` installs it (apt-get, as root)"
    packed = subprocess.run(
        [npm, "pack", "--dry-run", "--json"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert packed.returncode == 0, packed.stderr
    (tarball,) = json.loads(packed.stdout)
    assert tarball["name"] == "ikproxy"
    assert tarball["version"] == ikproxy.__version__
    assert sorted(f["path"] for f in tarball["files"]) == [
        "README.md",
        "ikproxy.d.ts",
        "ikproxy.js",
        "package.json",
    ]

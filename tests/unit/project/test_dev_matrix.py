"""`./dev matrix` collects exactly the folders whose tests `tests/conftest.py` marks `matrix`."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from types import ModuleType

from tests.conftest import MARKERS
from tests.support.servers import ROOT


def _dev() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("dev_script", str(ROOT / "dev"))
    spec = importlib.util.spec_from_loader("dev_script", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_matrix_collects_the_folders_marked_matrix() -> None:
    marked = {
        "/".join(("tests", *prefix)) for prefix, names in MARKERS.items() if "matrix" in names
    }
    dev = _dev()
    assert set(dev.MATRIX_FOLDERS) == marked
    assert dev.MATRIX_MARKER == "matrix"

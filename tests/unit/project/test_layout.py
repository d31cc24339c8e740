"""The package's layout holds: dependencies point down, no cycle, no private name crosses a module.

Every `import` in `src/ikproxy` is read with `ast`, those inside functions and
under `TYPE_CHECKING` included, so a cycle cannot hide in a deferred import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.servers import ROOT

SRC = ROOT / "src"

#: The layers, bottom up. A module may import from its own layer or a lower one.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("ikproxy.__about__", "ikproxy.protocol", "ikproxy.deprecation", "ikproxy.decimals"),
    ("ikproxy.redaction",),
    ("ikproxy.errors", "ikproxy.codecs"),
    ("ikproxy.io", "ikproxy.model"),
    ("ikproxy.telemetry",),
    ("ikproxy.concurrency", "ikproxy.fetch"),
    ("ikproxy.stores",),
    ("ikproxy.deployments",),
    ("ikproxy.policy",),
    ("ikproxy.runs",),
    # Celery workers run tasks and write their runs' logs: above `runs`, below the proxy.
    ("ikproxy.deployments.celery",),
    ("ikproxy.proxy",),
    ("ikproxy.asgi", "ikproxy.wsgi", "ikproxy.server", "ikproxy.adapters"),
    ("ikproxy.browser",),
    ("ikproxy.cli", "ikproxy.demo", "ikproxy.testing", "ikproxy.__main__"),
)
#: The package root and the aliases of moved paths re-export from every layer.
TOP = ("ikproxy", "ikproxy.caps", "ikproxy.images", "ikproxy.openapi", "ikproxy.outputs")
TOP += ("ikproxy.ownership", "ikproxy.params", "ikproxy.parsing", "ikproxy.sealed")
TOP += ("ikproxy.storage", "ikproxy.uploads")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "ikproxy").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every ikproxy import in `module`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [
                (a.name, None, node.lineno) for a in node.names if a.name.startswith("ikproxy")
            ]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("ikproxy"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(
                    (sub, None, node.lineno) if sub in MODULES else (base, alias.name, node.lineno)
                )
    return found


def _rank(module: str) -> int:
    if module in TOP:
        return len(LAYERS)
    # The layer of the longest name that `module` is or is inside of.
    found = [
        (len(m), rank)
        for rank, layer in enumerate(LAYERS)
        for m in layer
        if module == m or module.startswith(m + ".")
    ]
    if found:
        return max(found)[1]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _rank(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    upward = [
        f"line {line}: {target}"
        for target, _, line in GRAPH[module]
        if target in MODULES and _rank(target) > _rank(module)
    ]
    assert not upward, f"{module} imports a higher layer: {upward}"


def test_no_import_cycle() -> None:
    edges = {m: {t for t, _, _ in deps if t in MODULES and t != m} for m, deps in GRAPH.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_a_module(module: str) -> None:
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    crossing = []
    for target, name, line in GRAPH[module]:
        if name is not None and name.startswith("_") and not name.startswith("__"):
            crossing.append(f"line {line}: {name} from {target}")
        private = [p for p in target.split(".") if p.startswith("_") and not p.startswith("__")]
        if private and not target.startswith(package + "."):
            crossing.append(f"line {line}: private module {target}")
    assert not crossing, f"{module} reaches into private names: {crossing}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_600_lines(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= 600, f"{module} has {lines} lines"

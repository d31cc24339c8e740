"""Python blocks, run as written: one namespace per page, in order; apps served and requested.

A page's Python blocks run in order in one module of their own (blocks of a page build
on each other), in a folder of the page's own as working directory. Before a block runs:

* every `import` in it is imported, and every imported name looked up;
* a name it uses that neither the page nor Python defines is taken from `GIVENS` (the
  reader's own objects, which the docs leave to the reader: `deployment`...);
* the files it names from `world.GIVEN_FILES` are created; its SCALE endpoint and demo
  address are rewritten to this module's fake SCALE and demo servers.

Then it runs: a block with a top-level `await` (`async with`, `async for`) in an event
loop (one per page, compiled with `ast.PyCF_ALLOW_TOP_LEVEL_AWAIT`), the others with
`exec`. After it ran:

* every app it made (Starlette, FastAPI, Flask, Quart, Litestar, Sanic; Django's
  `urlpatterns`; a list of Starlette `routes`) is served (uvicorn in a thread, or the
  framework's test client) and requested: `/health` under one of the prefixes the block
  names answers 200, and `/run` streams a run to its `result` event;
* a block that defines `test_*` functions is also run by pytest as a test file of its
  own (it must stand alone, as a file does): each of its tests must pass;
* a `pytest_plugins` it sets is imported; a Django `IKPROXY` setting names only policy
  options.

A fragment (`FRAGMENTS` in the test module) is only compiled: its imports are checked as
above, every name it uses must exist on the page or in `GIVENS`, and every attribute it
reads from a given object must exist.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import dataclasses
import importlib
import inspect
import json
import os
import re
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.docs.blocks import Block
from tests.docs.world import World
from tests.support.servers import serve_in_thread

RUN_TIMEOUT = 60.0


def _given_deployment(world: World) -> Any:
    """Your deployment: a local one whose only task, `generate` (the demo's name), takes
    any inputs and parameters, and paints an image."""
    from collections.abc import Generator

    from ikproxy import ImageIO, LocalDeployment
    from ikproxy.testing import TINY_PNG

    def generate(*inputs: Any, **parameters: Any) -> Generator[float, None, ImageIO]:
        yield 0.5
        return ImageIO(TINY_PNG)

    deployment = LocalDeployment(name="docs")
    deployment.add_task(generate, "generate")
    return deployment


def _authorize(request: Any) -> bool:
    return True


def _verify_user() -> bool:
    return True


def _given_fake(world: World) -> Any:
    from ikproxy.testing import FakeScale

    return FakeScale()


#: The names the docs leave to the reader, and what stands for them here.
GIVENS: dict[str, Callable[[World], Any]] = {
    "deployment": _given_deployment,  # your deployment (any of them)
    "authorize": lambda world: _authorize,  # your `authorize(request)` hook
    "verify_user": lambda world: _verify_user,  # your FastAPI dependency
    "API_KEY": lambda world: "docs-key",  # your key
    "fake": _given_fake,  # a `FakeScale()`, in testing.md
    "client": lambda world: world.fake_client(),  # a SCALE `Client` (on the fake)
    "uuid": lambda world: world.fake_run_uuid,  # a SCALE run's uuid (one run on the fake)
}


class PythonPage:
    """The Python blocks of one page, run in order in one module."""

    def __init__(self, page: str, world: World, folder: Path) -> None:
        self.page = page
        self.world = world
        self.folder = folder
        name = "docs_" + re.sub(r"\W", "_", page.removesuffix(".md"))
        self.module = types.ModuleType(name)
        self.module.__file__ = str(folder / f"{name}.py")
        sys.modules[name] = self.module
        self.namespace: dict[str, Any] = self.module.__dict__
        self.loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        sys.modules.pop(self.module.__name__, None)
        if self.loop is not None:
            for value in list(self.namespace.values()):
                if _is_open_client(value):
                    self.loop.run_until_complete(value.aclose())
            self.loop.close()

    # -- running ---------------------------------------------------------------------

    def source_of(self, block: Block) -> str:
        return self.world.rewrite(block.code)

    def parse(self, block: Block) -> ast.Module:
        tree = ast.parse(self.source_of(block), filename=block.page)
        ast.increment_lineno(tree, block.line)  # tracebacks name the page's own lines
        return tree

    def check(self, block: Block) -> ast.Module:
        """Parse `block` and check its imports and its names (a fragment's whole test)."""
        tree = self.parse(block)
        check_imports(tree)
        missing = sorted(
            name
            for name in free_names(tree)
            if name not in self.namespace and name not in GIVENS and not hasattr(builtins, name)
        )
        assert not missing, f"names neither defined on the page nor given: {missing}"
        for name, attribute in attributes_read(tree):
            if name in GIVENS and name not in self.namespace:
                given = GIVENS[name](self.world)
                assert hasattr(given, attribute), f"{name}.{attribute} does not exist"
        return tree

    def run(self, block: Block, run_tests: Callable[[str, int], None]) -> None:
        """Run `block` as written (see the module's docstring); `run_tests(source, n)` runs
        a test file's source with pytest, expecting `n` tests to pass."""
        tree = self.parse(block)
        check_imports(tree)
        for name in free_names(tree):
            if name not in self.namespace and name in GIVENS:
                self.namespace[name] = GIVENS[name](self.world)
        source = self.source_of(block)
        self.world.given_files(source, self.folder)
        code = compile(tree, block.page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        before = {name: id(value) for name, value in self.namespace.items()}
        with _working_directory(self.folder):
            if code.co_flags & inspect.CO_COROUTINE:
                self._loop().run_until_complete(
                    asyncio.wait_for(eval(code, self.namespace), RUN_TIMEOUT)
                )
            else:
                exec(code, self.namespace)
        made = {
            name: value
            for name, value in self.namespace.items()
            if before.get(name) != id(value) and not name.startswith("__")
        }
        for plugin in made.get("pytest_plugins", ()):
            importlib.import_module(plugin)
        if "IKPROXY" in made:
            check_django_settings(made["IKPROXY"])
        apps = [(name, app) for name, value in made.items() for app in _apps(name, value)]
        for name, (kind, app) in apps:
            check_app(kind, app, prefixes_named(tree), self.module, name)
        tests = [
            node.name
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test")
        ]
        if tests:
            run_tests(source, len(tests))

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop


def _is_open_client(value: Any) -> bool:
    from ikproxy import Client

    return isinstance(value, Client)


@contextmanager
def _working_directory(folder: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


# -- reading a block -------------------------------------------------------------------


def check_imports(tree: ast.Module) -> None:
    """Import every module `tree` imports, and look up every name it imports from one."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if alias.name == "*":
                    continue
                if not hasattr(module, alias.name):
                    importlib.import_module(f"{node.module}.{alias.name}")  # a submodule


def _bound_names(tree: ast.AST) -> set[str]:
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound


def free_names(tree: ast.Module) -> list[str]:
    """The names `tree` reads but never binds, in order of first use."""
    bound = _bound_names(tree)
    read = [node for node in ast.walk(tree) if isinstance(node, ast.Name)]
    read.sort(key=lambda node: (node.lineno, node.col_offset))
    seen = {node.id: None for node in read if isinstance(node.ctx, ast.Load)}
    return [name for name in seen if name not in bound]


def attributes_read(tree: ast.Module) -> list[tuple[str, str]]:
    """Every `name.attribute` in `tree`."""
    return [
        (node.value.id, node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
    ]


_PREFIX = re.compile(r"^/?[\w-]+(?:/[\w-]+)*/?$")


def prefixes_named(tree: ast.Module) -> list[str]:
    """Where a block's app may mount the proxy: the root, each path prefix the block names
    (`"/api"`, Django's `"api/"`), and all of them nested in order (`/v1` then `/ik`)."""
    strings = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    strings.sort(key=lambda node: (node.lineno, node.col_offset))
    named = [
        "/" + node.value.strip("/")
        for node in strings
        if _PREFIX.match(node.value) and (node.value.startswith("/") or node.value.endswith("/"))
    ]
    candidates = ["", *named, "".join(named)]
    return list(dict.fromkeys(candidates))


def check_django_settings(config: Any) -> None:
    """`IKPROXY["POLICY"]` names only fields of `Policy`."""
    from ikproxy.policy import Policy

    fields = {field.name for field in dataclasses.fields(Policy)}
    unknown = set(config.get("POLICY", {})) - fields
    assert not unknown, f"IKPROXY['POLICY'] names no policy option: {sorted(unknown)}"


# -- serving what a block made ------------------------------------------------------------

_ASGI = {"starlette.Starlette", "quart.Quart", "litestar.Litestar", "sanic.Sanic"}


def _classes(value: Any) -> set[str]:
    return {f"{c.__module__.split('.')[0]}.{c.__name__}" for c in type(value).__mro__}


def _apps(name: str, value: Any) -> list[tuple[str, Any]]:
    """The apps `value` (bound to `name`) is, as (kind, app) pairs."""
    classes = _classes(value)
    if classes & _ASGI:
        return [("asgi", value)]
    if "flask.Flask" in classes:
        return [("flask", value)]
    if name == "urlpatterns":
        return [("django", value)]
    if name == "routes" and isinstance(value, list) and value:
        from starlette.applications import Starlette
        from starlette.routing import BaseRoute

        if all(isinstance(route, BaseRoute) for route in value):
            return [("asgi", Starlette(routes=value))]
    return []


Get = Callable[..., httpx.Response]


@contextmanager
def _client(kind: str, app: Any, module: types.ModuleType) -> Iterator[Get]:
    if kind == "asgi":
        lifespan = "on" if "sanic.Sanic" in _classes(app) else "auto"
        with (
            serve_in_thread(app, lifespan=lifespan) as served,
            httpx.Client(base_url=served.url, timeout=RUN_TIMEOUT) as http,
        ):
            yield http.get
    elif kind == "flask":
        with app.test_client() as client:

            def get(path: str, params: dict[str, str] | None = None) -> httpx.Response:
                answer = client.get(path, query_string=params)
                return httpx.Response(answer.status_code, content=answer.data)

            yield get
    else:
        from django.test import Client, override_settings

        configure_django()
        with override_settings(ROOT_URLCONF=module):
            client = Client()

            def get(path: str, params: dict[str, str] | None = None) -> httpx.Response:
                answer = client.get(path, params or {})
                body = b"".join(answer.streaming_content) if answer.streaming else answer.content
                return httpx.Response(answer.status_code, content=body)

            yield get


def check_app(
    kind: str, app: Any, prefixes: list[str], module: types.ModuleType, name: str
) -> None:
    """Serve `app`: `/health` answers under one of `prefixes`, and a run streams to its end."""
    with _client(kind, app, module) as get:
        found = None
        for prefix in prefixes:
            answer = get(f"{prefix}/health")
            if answer.status_code == 200 and answer.json().get("status") == "ok":
                found = prefix
                break
        assert found is not None, f"{name}: no /health answered 200 under {prefixes}"
        answer = get(f"{found}/run", params={"prompt": "a red fox"})
        if answer.status_code == 400 and _error_code(answer) == "invalid_parameter":
            answer = get(f"{found}/run")  # a policy that takes no parameters
        assert answer.status_code == 200, f"{name}: {found}/run: {answer.status_code} {answer.text}"
        assert "event: result" in answer.text, f"{name}: {found}/run: {answer.text[-500:]}"


def _error_code(answer: httpx.Response) -> str | None:
    try:
        code: str = answer.json()["error"]["code"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    return code


def configure_django() -> None:
    """Django's settings, configured as the adapter's tests do (once per process)."""
    from tests.unit.surfaces import test_adapter_django  # noqa: F401  (configures Django)

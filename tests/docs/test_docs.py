"""The documentation's code blocks, run as written: one test per block.

Every fenced block tagged python, sh/shell/bash/console or html in README.md,
docs/**/*.md and examples/*/README.md is a test, named by its page and its rank among
the page's fences (`docs/guides/testing.md#3`); a new page is picked up by itself.

* Python (`pyblocks.py`): a page's blocks run in order in one namespace; apps are
  served and requested, a top-level `await` runs in an event loop, test functions run
  under pytest, imports are checked.
* Shell (`shblocks.py`): a page's blocks are one shell session; cheap commands run,
  servers are started, checked to answer and stopped, expensive ones (`npm ci`,
  `./dev test`) are checked to name what exists.
* HTML (`htmlblocks.py`): the block is a page loaded in headless Chromium beside the
  demo's `/api`; it must run without an error and get its result.

What the docs take for granted (`world.py`): a demo server for `127.0.0.1:8000`, the
fake SCALE server (`python -m ikproxy.testing`) for any `https://*.scale.ikomia.ai`
endpoint, a redis-server for `redis://redis:6379/0`, and `pyblocks.GIVENS` for the
reader's own objects (`deployment`...). Run them: `./dev test -m docs`, or one block:
`./dev test "tests/docs/test_docs.py::test_block_runs_as_written[docs/guides/testing.md#3]"`.

**When a block cannot run here**, add it to one of the two lists below: its id, then
a piece of its code (so that an id that shifts to another block fails) and the reason.
The test then still parses it and checks its imports.

* `SKIP`: blocks that need what a test must not use: the network, a SCALE account.
  A SCALE block should rather run against the fake (it does, as written, when its
  endpoint is `https://<name>.scale.ikomia.ai`), and say so next to it in the docs.
* `FRAGMENTS`: Python excerpts that cannot run alone (a body without its context):
  compiled, their imports checked, their names looked up on the page and in `GIVENS`,
  the attributes they read from a given object checked.

For example:

    "docs/guides/observability.md#2": ("collector:4317", "exports to a collector (the network)"),

An entry whose block is gone, or whose id now names a block without that code (a
block was added above it), fails `test_the_lists_name_blocks`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.blocks import Block, all_blocks, blocks_of, section_after
from tests.docs.htmlblocks import check_html
from tests.docs.pyblocks import PythonPage, check_imports
from tests.docs.shblocks import ShellPage
from tests.docs.world import SCALE_ENDPOINT, World, world

#: Blocks not run: id -> (a piece of the block's code, what it needs that a test must not use).
SKIP: dict[str, tuple[str, str]] = {
    "examples/prometheus/README.md#2": (
        'sqlite3 billing.sqlite3 "SELECT * FROM usage"',
        "reads the example's own server and its billing file; the example's test"
        " (tests/integration/library/test_prometheus_recipe.py) runs these steps",
    ),
    "docs/guides/celery.md#5": (
        'outputs_location="s3://my-bucket/ikproxy-outputs"',
        "writes to an S3 bucket of the reader's (the network)",
    ),
    "docs/guides/inputs-and-outputs.md#1": (
        'client.run("https://example.com/clip.mp4")',
        "fetches https://example.com/clip.mp4 (the network)",
    ),
    "docs/guides/inputs-and-outputs.md#3": (
        "await fetch_url(url,",
        "fetches a URL of the reader's (the network)",
    ),
}

#: Python blocks only compiled and checked: id -> (a piece of the code, why it cannot run alone).
FRAGMENTS: dict[str, tuple[str, str]] = {
    "docs/guides/celery.md#2": (
        "deployment = CeleryDeployment(celery_app, store=store",
        "its runs need a Celery worker: the next block starts one, and"
        " tests/integration/deployments/test_celery.py runs this module's shape end to end",
    ),
    "docs/guides/testing.md#4": (
        'await fake.wait_for("poll", count=2)',
        "waits for the polls of a client the excerpt leaves out",
    ),
}

BLOCKS = [block for block in all_blocks() if block.kind]


class Docs:
    """The pages' sessions, in the module's world; each block runs at most once."""

    def __init__(self, world: World, tmp: Path) -> None:
        self.world = world
        self.tmp = tmp
        self.python: dict[str, PythonPage] = {}
        self.shell: dict[str, ShellPage] = {}
        self.done: set[str] = set()

    def folder(self, page: str) -> Path:
        folder = self.tmp / page.replace("/", "_")
        folder.mkdir(exist_ok=True)
        return folder

    def python_page(self, page: str) -> PythonPage:
        if page not in self.python:
            self.python[page] = PythonPage(page, self.world, self.folder(page))
        return self.python[page]

    def shell_page(self, page: str) -> ShellPage:
        if page not in self.shell:
            python = [b for b in blocks_of(page) if b.kind == "python"]
            self.shell[page] = ShellPage(page, self.world, self.folder(page), python)
        return self.shell[page]

    def run(self, block: Block, tests: bool = True) -> None:
        """Run `block`, after the blocks of its page before it (if not run yet)."""
        for earlier in blocks_of(block.page):
            if earlier.rank >= block.rank:
                break
            if earlier.kind and earlier.id not in self.done and earlier.id not in SKIP:
                try:
                    self._run(earlier, tests=False)
                except Exception:
                    pass  # its own test reports it
        self._run(block, tests)

    def _run(self, block: Block, tests: bool) -> None:
        self.done.add(block.id)
        if block.kind == "python":
            page = self.python_page(block.page)
            if block.id in FRAGMENTS:
                page.check(block)
            else:
                folder = self.folder(block.page)

                def run_tests(source: str, count: int) -> None:
                    if tests:  # when catching up on earlier blocks, their own tests do it
                        _pytest(folder, source, count)

                page.run(block, run_tests)
        elif block.kind == "shell":
            self.shell_page(block.page).run(block)
        elif block.kind == "html":
            check_html(self.world, block)

    def close(self) -> None:
        for page in self.python.values():
            page.close()


def _pytest(folder: Path, source: str, count: int) -> None:
    """Run `source` with pytest, as a test file of its own: its `count` tests must pass."""
    (folder / "test_block.py").write_text(source)
    # The plugins a reader has: anyio's (ikproxy depends on anyio). Loading every plugin
    # installed here (hypothesis, faker...) would cost seconds per block.
    plugins = ["-p", "no:cacheprovider", "-p", "anyio.pytest_plugin"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *plugins, "test_block.py"],
        cwd=folder,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"{count} passed" in done.stdout, done.stdout[-3000:]


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docs]:
    tmp = tmp_path_factory.mktemp("docs")
    with world(tmp, servers_ahead=True) as made:
        running = Docs(made, tmp)
        try:
            yield running
        finally:
            running.close()


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.id)
def test_block_runs_as_written(block: Block, docs: Docs) -> None:
    if block.id in SKIP:
        if block.kind == "python":
            check_imports(docs.python_page(block.page).parse(block))
        pytest.skip(SKIP[block.id][1])
    docs.run(block)


def test_the_lists_name_blocks() -> None:
    ids = {block.id: block for block in BLOCKS}
    entries = {**SKIP, **FRAGMENTS}
    stale = [
        name
        for name, (code, _) in entries.items()
        if code not in getattr(ids.get(name), "code", "")
    ]
    assert not stale, f"SKIP or FRAGMENTS name no block with their code: {stale}"
    not_python = [name for name in FRAGMENTS if ids[name].kind != "python"]
    assert not not_python, f"FRAGMENTS are Python blocks: {not_python}"


def test_scale_blocks_say_how_to_run_on_the_fake() -> None:
    """A block on a SCALE endpoint is followed, in its section, by how to run it on the fake."""
    silent = [
        block.id
        for block in BLOCKS
        if SCALE_ENDPOINT.search(block.code) and "ikproxy.testing" not in section_after(block)
    ]
    assert not silent, f"no word of `python -m ikproxy.testing` after {silent}"

"""The docs test's own machinery: what it finds in a page, and what it refuses."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.blocks import Block, blocks_of, section_after
from tests.docs.pyblocks import free_names, prefixes_named
from tests.docs.shblocks import ShellPage, words_of
from tests.docs.world import World, world
from tests.support.servers import ROOT

PAGE = """# A page

```python
import os
```

=== "In a tab"

    ```sh
    cd examples
    ```

~~~json
{"not": "run"}
~~~

```html
<p>
# not a heading: inside a fence
</p>
```

Said after the block.

## The next section

```console
$ ikproxy --help
usage: ...
```
"""


@pytest.fixture
def page(tmp_path: Path) -> Path:
    (tmp_path / "page.md").write_text(PAGE)
    return tmp_path


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[ShellPage]:
    with world(tmp_path) as made:
        yield ShellPage("page.md", made, tmp_path, [])


def test_blocks_are_ranked_among_every_fence_and_dedented(page: Path) -> None:
    found = blocks_of("page.md", page)
    assert [(b.id, b.lang, b.kind) for b in found] == [
        ("page.md#1", "python", "python"),
        ("page.md#2", "sh", "shell"),
        ("page.md#3", "json", None),
        ("page.md#4", "html", "html"),
        ("page.md#5", "console", "shell"),
    ]
    assert found[1].code == "cd examples\n"
    assert found[1].line == 9  # the opening fence


def test_a_section_ends_at_the_next_heading_outside_fences(page: Path) -> None:
    html = blocks_of("page.md", page)[3]
    section = section_after(html, page)
    assert "Said after the block." in section
    assert "The next section" not in section


def test_a_subshell_keeps_its_cd(shell: ShellPage) -> None:
    shell.run(_sh("(cd examples/frontends && npm ci)\ncd examples"))
    assert shell.cwd == ROOT / "examples"


def test_a_cd_holds_for_the_lines_after_it(shell: ShellPage) -> None:
    with pytest.raises(AssertionError, match=r"no examples/frontends/examples/fastapi/app\.py"):
        shell.run(_sh("cd examples/frontends && npm run build\npython examples/fastapi/app.py"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('pip install "ikproxy[fastapi,nope]"', r"no extra \['nope'\]"),
        ("./dev tset", r"no such command"),
        ("./dev test tests/unit/nowhere.py", r"no tests/unit/nowhere\.py"),
        ("cd examples/nowhere", r"no folder examples/nowhere"),
        ("cd examples/frontends && npm run deploy", r"no such script"),
        ("ikproxy demo [--colour C]", r"ikproxy demo has no --colour"),
        ("make docs", r"make: teach"),
    ],
)
def test_a_command_that_names_what_does_not_exist_fails(
    shell: ShellPage, line: str, message: str
) -> None:
    with pytest.raises(AssertionError, match=message):
        shell.run(_sh(line))


def test_an_app_server_serves_the_pages_block_that_makes_the_app(tmp_path: Path) -> None:
    code = (
        "from starlette.applications import Starlette\n"
        "from starlette.routing import Mount\n"
        "from ikproxy.asgi import create_app\n"
        "from ikproxy.demo import deployment\n"
        'app = Starlette(routes=[Mount("/api", app=create_app(deployment))])\n'
    )
    with world(tmp_path) as made:
        shell = ShellPage("page.md", made, tmp_path, [Block("page.md", 1, "python", 1, code)])
        shell.run(_sh("hypercorn app:app --bind 127.0.0.1:8000"))
        with pytest.raises(AssertionError, match=r"no Python block of page\.md makes 'api'"):
            shell.run(_sh("uvicorn app:api --port 8000"))
    assert (tmp_path / "app.py").read_text() == code


def test_words_keep_quotes_and_split_operators() -> None:
    assert words_of('IKOMIA_TOKEN=... ikproxy run -p prompt="a red fox" # a comment') == [
        "IKOMIA_TOKEN=...",
        "ikproxy",
        "run",
        "-p",
        "prompt=a red fox",
    ]
    assert words_of("(cd x && npm ci)") == ["(", "cd", "x", "&&", "npm", "ci", ")"]


def test_free_names_are_those_read_and_never_bound() -> None:
    tree = ast.parse(
        "import os\nfrom x import y\ndef f(a):\n    return a + b\nc = [d for d in e]\nprint(c, y)"
    )
    assert free_names(tree) == ["b", "e", "print"]


def test_prefixes_are_the_root_each_path_named_and_all_nested() -> None:
    tree = ast.parse('Mount("/v1", routes=[Mount("/ik", app=x)]); path("api/", y); z("a b")')
    assert prefixes_named(tree) == ["", "/v1", "/ik", "/api", "/v1/ik/api"]


def _sh(code: str) -> Block:
    return Block("page.md", 1, "sh", 1, code + "\n")


def test_the_world_rewrites_only_what_it_knows(tmp_path: Path) -> None:
    made = World(tmp_path)
    try:
        assert made.rewrite("https://scale.ikomia.ai and http://127.0.0.1:9000") == (
            "https://scale.ikomia.ai and http://127.0.0.1:9000"
        )
    finally:
        made.close()

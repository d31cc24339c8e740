"""The fenced code blocks of the documentation: where they are, what kind, in what order.

The pages are found by glob (README.md, docs/**/*.md, examples/*/README.md), so a new
page is tested as soon as it exists. A block's id is its page and its rank among the
page's fenced blocks of every language, from 1: `docs/guides/testing.md#3` is the third
fence of that page, whatever its language.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import ROOT

#: The pages whose blocks are run, as globs under the repository's root.
PAGES = ("README.md", "docs/**/*.md", "examples/*/README.md")

#: The fence languages that run, by kind; the others (ts, js, json, nginx...) are read only.
KINDS = {
    "python": "python",
    "py": "python",
    "sh": "shell",
    "shell": "shell",
    "bash": "shell",
    "console": "shell",
    "html": "html",
}

# An opening fence (indented in a tab or a list item, or not), its language, its body,
# and the closing fence at the same indentation.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[^\n]*\n"
    r"(?P<body>.*?)"
    r"^(?P=indent)(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Block:
    """One fenced block: `page` (relative to the root), its rank, language, kind and code."""

    page: str
    rank: int
    lang: str
    line: int
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}#{self.rank}"

    @property
    def kind(self) -> str | None:
        """python, shell or html; None for a block that does not run."""
        return KINDS.get(self.lang.lower())

    @property
    def path(self) -> Path:
        return ROOT / self.page


def pages(root: Path = ROOT) -> list[str]:
    """Every documentation page, relative to `root`, in a stable order."""
    found: set[str] = set()
    for pattern in PAGES:
        found.update(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
    return sorted(found, key=lambda page: (page != "README.md", page))


def blocks_of(page: str, root: Path = ROOT) -> list[Block]:
    """The fenced blocks of `page`, in order, their code dedented."""
    text = (root / page).read_text(encoding="utf-8")
    found = []
    for rank, match in enumerate(_FENCE.finditer(text), start=1):
        line = text.count("\n", 0, match.start()) + 1
        code = textwrap.dedent(match["body"])
        found.append(Block(page, rank, match["lang"], line, code))
    return found


def section_after(block: Block, root: Path = ROOT) -> str:
    """The text of `block`'s page from the block to the next heading (outside any fence)."""
    lines = (root / block.page).read_text(encoding="utf-8").splitlines()[block.line - 1 :]
    fence = None
    for count, line in enumerate(lines):
        opening = re.match(r"^\s*(`{3,}|~{3,})", line)
        if opening and fence is None:
            fence = opening[1]
        elif opening and line.strip().startswith(fence or "\0"):
            fence = None
        elif fence is None and re.match(r"^#{1,6} ", line):
            return "\n".join(lines[:count])
    return "\n".join(lines)


def all_blocks(root: Path = ROOT) -> list[Block]:
    """Every fenced block of every page."""
    return [block for page in pages(root) for block in blocks_of(page, root)]

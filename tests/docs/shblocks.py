"""Shell blocks, run as written where that is cheap and safe, checked where it is not.

A page's shell blocks are one shell session: it starts at the repository's root, and a
`cd` holds for the lines and blocks after it (`( ... )` keeps it to the group). Lines
are split on `&&` and `;`; `NAME=value` before a command sets its environment (a value
`...` stands for the reader's own: this module's). Each command:

| Command | What the test does |
|---|---|
| `cd DIR` | DIR exists; the session moves there |
| `pip install ...` | each `ikproxy[extras]` names extras of pyproject.toml; another package is installed here |
| `./dev CMD ...` | `./dev` is in the folder; CMD is one of its commands; the test paths and the benchmark it names exist |
| `npm ci`, `npm run S`, `npx TOOL`, `npm install ikproxy` | the lockfile, the script S, the tool in package.json, the package in js/ |
| `ikproxy ...`, `python -m ikproxy ...` | run (`run`, `--help`); a server (`demo`, `serve`) started, checked to answer, stopped; a synopsis (`[--port P]`) checked against `--help` |
| `python -m ikproxy.testing ...` | started, checked to answer, stopped |
| `python FILE ...` | FILE exists; with `--port`, a server: started, checked to answer, stopped; else run |
| `python -c CODE` | run |
| `uvicorn`, `gunicorn`, `hypercorn` `MODULE:APP` (or `python -m` them) | the page's last Python block that makes APP, saved as MODULE.py, served, checked to answer |
| `curl URL` | run against the demo server; a run streams to its `result` event |

A server's `--port` or `--bind`/`-b` (8000 in the docs) becomes a free port, and
`127.0.0.1:8000` elsewhere the demo server's address. Anything else fails: teach this module the command, or put the
block in the skip list.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.docs.blocks import Block, blocks_of, pages
from tests.docs.world import World
from tests.support.servers import ROOT, free_port, running_server, wait_until_listening

COMMAND_TIMEOUT = 60.0
#: What the servers the docs start print once they accept connections.
READY = (
    r"Running on|running on|running at|Uvicorn running on|Worker ready"
    r"|Starting (?:WSGI )?development server|Goin' Fast|Listening at"
)
#: The servers of ASGI and WSGI apps the docs name (each in the `test` extra).
APP_SERVERS = ("uvicorn", "gunicorn", "hypercorn")
_ASSIGNMENT = re.compile(r"^([A-Za-z_]\w*)=(.*)$", re.DOTALL)


def dev_commands() -> set[str]:
    """The commands `./dev` lists in its usage text."""
    text = (ROOT / "dev").read_text(encoding="utf-8")
    usage = text.split('USAGE = """', 1)[1].split('"""', 1)[0]
    return set(re.findall(r"^  (\w+)", usage, re.MULTILINE))


def extras() -> set[str]:
    """The extras of pyproject.toml (on Python 3.10, which has no tomllib: of the installed
    ikproxy, which `./dev` reinstalls when pyproject.toml changes)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return set(importlib.metadata.metadata("ikproxy").get_all("Provides-Extra") or [])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(project["project"]["optional-dependencies"])


def logical_lines(block: Block) -> list[str]:
    """The commands of a block: continuation lines joined, blanks and comments dropped;
    in a `console` block, only the lines after a `$ ` prompt."""
    text = block.code.replace("\\\n", " ")
    lines = []
    for line in text.splitlines():
        if block.lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append(line)
    return lines


def words_of(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


class ShellPage:
    """The shell session of one page."""

    def __init__(self, page: str, world: World, folder: Path, python_blocks: list[Block]) -> None:
        self.page = page
        self.world = world
        self.folder = folder
        self.cwd = ROOT
        self.python_blocks = python_blocks

    def run(self, block: Block) -> None:
        for line in logical_lines(block):
            words = words_of(line)
            self.cwd = self._sequence(words, self.cwd, block)

    def _sequence(self, words: list[str], cwd: Path, block: Block) -> Path:
        """Run `words` (commands joined by `&&`, `;` and `( ... )`); the folder after them."""
        i = 0
        while i < len(words):
            if words[i] == "(":
                depth, j = 1, i + 1
                while depth:
                    depth += {"(": 1, ")": -1}.get(words[j], 0)
                    j += 1
                self._sequence(words[i + 1 : j - 1], cwd, block)  # a subshell: cwd unchanged
                i = j
            else:
                j = i
                while j < len(words) and words[j] not in ("&&", ";"):
                    j += 1
                cwd = self.command(words[i:j], cwd, block)
                i = j
            while i < len(words) and words[i] in ("&&", ";"):
                i += 1
        return cwd

    # -- one command ---------------------------------------------------------------------

    def command(self, words: list[str], cwd: Path, block: Block) -> Path:
        assert "|" not in words, f"a pipe: teach tests/docs/shblocks.py {words}"
        assert "||" not in words, f"`||`: teach tests/docs/shblocks.py {words}"
        env: dict[str, str] = {}
        while words and _ASSIGNMENT.match(words[0]):
            name, value = _ASSIGNMENT.match(words[0]).groups()  # type: ignore[union-attr]
            if value == "...":  # the reader's own: this module's
                if name.startswith("IKOMIA_"):
                    self.world.scale_environ()
                value = os.environ.get(name, "")
            env[name] = value
            words = words[1:]
        program, args = words[0], words[1:]
        where = _relative(cwd)
        if program == "cd":
            target = (cwd / args[0]).resolve()
            assert target.is_dir(), f"cd {args[0]}: no folder {_relative(target)} (in {where})"
            return target
        if program == "pip":
            self.pip(args)
        elif program == "./dev":
            self.dev(args, cwd)
        elif program in ("npm", "npx"):
            self.npm(program, args, cwd)
        elif program == "ikproxy":
            self.ikproxy(args, env)
        elif program in ("python", "python3"):
            self.python(args, cwd, env)
        elif program in APP_SERVERS:
            self.app_server(program, args, env)
        elif program == "curl":
            self.curl(args)
        elif program == "celery":
            self.celery(args, env)
        else:
            raise AssertionError(f"{program}: teach tests/docs/shblocks.py this command")
        return cwd

    def pip(self, args: list[str]) -> None:
        assert args[:1] == ["install"], f"pip {' '.join(args)}"
        known = extras()
        for requirement in args[1:]:
            if requirement.startswith("-"):
                continue
            named = re.fullmatch(r"ikproxy(?:\[([\w,\s-]*)\])?", requirement)
            if named:
                wanted = {e.strip() for e in (named[1] or "").split(",") if e.strip()}
                assert wanted <= known, f"no extra {sorted(wanted - known)} in pyproject.toml"
            else:
                importlib.metadata.distribution(re.split(r"[<>=\[ ]", requirement)[0])

    def dev(self, args: list[str], cwd: Path) -> None:
        assert (cwd / "dev").is_file(), f"./dev: no such file in {_relative(cwd)}"
        assert args[0] in dev_commands(), f"./dev {args[0]}: no such command"
        if args[0] in ("test", "matrix"):
            for arg in args[1:]:
                if arg.startswith("tests/"):
                    assert (cwd / arg.split("::")[0]).exists(), f"./dev {args[0]}: no {arg}"
        elif args[0] == "bench":
            assert (cwd / "benchmarks" / f"{args[1]}.py").is_file(), f"no benchmark {args[1]}"
        elif args[0] == "docs":
            assert args[1:] in ([], ["build"]), f"./dev docs {args[1:]}"

    def npm(self, program: str, args: list[str], cwd: Path) -> None:
        if program == "npm" and args[:1] == ["install"]:
            for arg in args[1:]:
                if arg == "ikproxy":
                    name = json.loads((ROOT / "js" / "package.json").read_text())["name"]
                    assert name == "ikproxy", f"js/package.json is {name!r}"
                elif not arg.startswith("-"):
                    assert (cwd / arg).exists(), f"npm install {arg}: not found"
            return
        manifest = cwd / "package.json"
        assert manifest.is_file(), f"{program}: no package.json in {_relative(cwd)}"
        package: dict[str, Any] = json.loads(manifest.read_text())
        if program == "npx":
            tools = {**package.get("dependencies", {}), **package.get("devDependencies", {})}
            assert args[0] in tools, f"npx {args[0]}: not in {_relative(manifest)}"
            if "-o" in args:
                output = cwd / args[args.index("-o") + 1]
                assert output.parent.is_dir(), f"npx: no folder for {_relative(output)}"
        elif args[:1] == ["ci"]:
            assert (cwd / "package-lock.json").is_file(), f"npm ci: no lockfile in {_relative(cwd)}"
        elif args[:1] == ["run"]:
            scripts = package.get("scripts", {})
            assert args[1] in scripts, f"npm run {args[1]}: no such script in {_relative(manifest)}"
        else:
            raise AssertionError(f"npm {' '.join(args)}: teach tests/docs/shblocks.py")

    def ikproxy(self, args: list[str], env: dict[str, str]) -> None:
        command = [str(Path(sys.executable).parent / "ikproxy")]
        if any(arg.startswith("[") for arg in args):  # a synopsis: `ikproxy demo [--port P]`
            sub = args[0]
            done = self._run([*command, sub, "--help"], env)
            for option in re.findall(r"--[\w-]+", " ".join(args)):
                assert option in done.stdout, f"ikproxy {sub} has no {option}"
            return
        if args[:1] in (["demo"], ["serve"]):
            self._serve([*command, *args], env, health=True)
        elif args[:1] == ["run"]:
            self._run([*command, *args], env)
            if "-o" in args:
                written = self.folder / args[args.index("-o") + 1]
                assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{written} is no PNG"
        else:
            self._run([*command, *args], env)

    def python(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        if args[:1] == ["-m"] and args[1] in APP_SERVERS:
            self.app_server(args[1], args[2:], env)
        elif args[:2] == ["-m", "ikproxy"]:
            self.ikproxy(args[2:], env)
        elif args[:2] == ["-m", "ikproxy.testing"]:
            self._serve([sys.executable, *args], env, health=False)
        elif args[:1] == ["-c"]:
            self._run([sys.executable, *args], env)
        else:
            script = cwd / args[0]
            assert script.is_file(), (
                f"python {args[0]}: no {_relative(script)} (in {_relative(cwd)})"
            )
            if "--port" in args:
                self._serve([sys.executable, str(script), *args[1:]], env, health=True, cwd=cwd)
            else:
                self._run([sys.executable, str(script), *args[1:]], env)

    def app_server(self, program: str, args: list[str], env: dict[str, str]) -> None:
        """`uvicorn app:app ...`: the page's block that makes `app`, saved as app.py, served."""
        target = next((arg for arg in args if re.fullmatch(r"[\w.]+:\w+", arg)), None)
        assert target, f"{program} {' '.join(args)}: no MODULE:APP"
        self._module_of(target)
        self._serve([sys.executable, "-m", program, *args], env, health=True)

    def celery(self, args: list[str], env: dict[str, str]) -> None:
        """`celery -A module:app worker ...`: the module saved as for an app server, the worker
        started as written (INFO logs, quick start-up), checked ready, stopped by pid."""
        assert args[:1] == ["-A"], f"celery {' '.join(args)}: teach me"
        assert "worker" in args, f"celery {' '.join(args)}: teach me"
        self._module_of(args[1])
        command = [str(Path(sys.executable).parent / "celery"), *args]
        command += ["--loglevel", "INFO", "--without-gossip", "--without-mingle"]
        command = [self.world.rewrite(word) for word in command]
        environ = {key: self.world.rewrite(value) for key, value in self._environ(env).items()}
        with running_server(
            command, ready=r"@\S+ ready\.", env=environ, cwd=self.folder, timeout=90
        ):
            pass

    def _module_of(self, target: str) -> None:
        """Save the page's block that makes `target`'s object as its module (a module of the
        package is used as it is)."""
        module, _, name = target.partition(":")
        if module.split(".")[0] == "ikproxy":
            return
        source = self._python_making(name)
        (self.folder / f"{module.replace('.', '/')}.py").write_text(self.world.rewrite(source))

    def curl(self, args: list[str]) -> None:
        urls = [arg for arg in args if arg.startswith("http")]
        done = self._run(["curl", "--silent", "--show-error", *args], {})
        if any("/run" in url for url in urls):
            assert "event: result" in done.stdout, done.stdout[-500:]

    # -- helpers -------------------------------------------------------------------------

    def _python_making(self, name: str) -> str:
        for block in reversed(self.python_blocks):
            if re.search(rf"^{re.escape(name)}\s*=", block.code, re.MULTILINE):
                return block.code
        raise AssertionError(f"no Python block of {self.page} makes {name!r}")

    def _environ(self, env: dict[str, str]) -> dict[str, str]:
        return {**os.environ, **{key: self.world.rewrite(value) for key, value in env.items()}}

    def _run(self, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.world.rewrite(word) for word in command],
            cwd=self.folder,
            env=self._environ(env),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, f"{shlex.join(command)}: {done.returncode}\n{done.stderr}"
        return done

    def _serve(
        self, command: list[str], env: dict[str, str], *, health: bool, cwd: Path | None = None
    ) -> None:
        """Start a server on a free port, check that it answers, stop it (by its pid).

        The examples' servers (`python examples/*/app.py --port N`, as their pages say)
        are started ahead, a few at a time, the first time a page starts a server."""
        folder = cwd or self.folder
        if self.world.servers_ahead:
            self.world.start_ahead(
                {
                    (tuple(planned), str(ROOT)): functools.partial(self._start, planned, {}, ROOT)
                    for planned in example_servers()
                }
            )
        taken = None if env else self.world.take((tuple(command), str(folder)))
        stack, port = taken or self._start(command, env, folder)
        url = f"http://127.0.0.1:{port}"
        with stack:
            wait_until_listening(url)  # several workers listen a little after they say so
            answer = httpx.get(f"{url}/api/health" if health else url, timeout=10)
            if health and answer.status_code == 404:  # an app made by create_app: at the root
                answer = httpx.get(f"{url}/health", timeout=10)
            if health:
                assert answer.status_code == 200, f"{answer.url}: {answer.status_code}"
                assert answer.json()["status"] == "ok"

    def _start(
        self, command: list[str], env: dict[str, str], cwd: Path
    ) -> tuple[contextlib.ExitStack, int]:
        """`command` started on a free port (its `--port` or `--bind`), once it is ready."""
        port = free_port()
        command = list(command)
        binds = [i + 1 for i, word in enumerate(command) if word in ("--bind", "-b")]
        if binds:
            for i in binds:
                command[i] = f"127.0.0.1:{port}"
        elif "--port" in command:
            command[command.index("--port") + 1] = str(port)
        else:
            command += ["--port", str(port)]
        command = [self.world.rewrite(word) for word in command]
        stack = contextlib.ExitStack()
        with stack:
            stack.enter_context(
                running_server(command, ready=READY, env=self._environ(env), cwd=cwd)
            )
            return stack.pop_all(), port


def example_servers() -> list[list[str]]:
    """The commands that start the examples' servers, as their READMEs give them, from
    the repository's root (`python examples/<name>/app.py --port 8000`)."""
    commands = []
    for page in pages():
        for block in blocks_of(page):
            if block.kind != "shell":
                continue
            for line in logical_lines(block):
                words = words_of(line)
                if (
                    words[:1] == ["python"]
                    and len(words) > 1
                    and re.fullmatch(r"examples/[\w-]+/app\.py", words[1])
                    and "--port" in words
                ):
                    commands.append([sys.executable, str(ROOT / words[1]), *words[2:]])
    return commands


def _relative(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix() or "."
    except ValueError:
        return str(path)

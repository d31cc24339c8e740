"""The `ikproxy` command: run the demo, serve a SCALE deployment, or consume any stream.

    ikproxy demo [--host H] [--port P] [--metrics]
                                                the demo page on the local demo deployment
    ikproxy demo --workers N                    ... its tasks on N Celery workers (and a Redis)
    ikproxy serve --endpoint URL [--host H] [--port P]    the same page on a SCALE deployment
    ikproxy run URL --param prompt=... [--image PATH] [--output out.png] [--format sse|ndjson]
    ikproxy --version

Exit status: 0 on success, 1 when the run or the server fails, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from ikproxy.__about__ import __version__
from ikproxy.errors import IncompleteStream, StreamError
from ikproxy.model import Progress

__all__ = ["main"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000

_BAR_WIDTH = 24


class _UsageError(Exception):
    """A command line that cannot work: exit status 2, like argparse's own errors."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except _UsageError as exc:
        parser.exit(2, f"ikproxy {args.command}: {exc}\n")
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ikproxy",
        description="Stream long AI runs (Ikomia SCALE or local) to the browser.",
    )
    parser.add_argument("--version", action="version", version=f"ikproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run the demo page on the local demo deployment (no account, no network)",
        description="Serve the demo page at / and the proxy at /api on the local demo "
        "deployment. With IKOMIA_ENDPOINT (and IKOMIA_TOKEN) set, run it on that SCALE "
        "deployment instead.",
    )
    _add_server_options(demo)
    demo.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="run the tasks on N Celery workers, with a redis-server, all started here "
        "and stopped on exit (needs redis-server and ikproxy[celery])",
    )
    demo.add_argument(
        "--metrics",
        action="store_true",
        help="also serve the OpenTelemetry metrics as a Prometheus page at /metrics/ "
        "(needs ikproxy[prometheus])",
    )
    demo.set_defaults(handler=_demo)

    serve = commands.add_parser(
        "serve",
        help="run the demo page on a SCALE deployment (token from IKOMIA_TOKEN)",
        description="Serve the demo page at / and the proxy at /api on an Ikomia SCALE "
        "deployment. The API token is read from IKOMIA_TOKEN and never reaches the page.",
    )
    serve.add_argument(
        "--endpoint",
        default=os.environ.get("IKOMIA_ENDPOINT") or None,
        help="the deployment's endpoint URL (default: IKOMIA_ENDPOINT)",
    )
    _add_server_options(serve)
    serve.set_defaults(handler=_serve_scale)

    run = commands.add_parser(
        "run",
        help="run a job through any ikproxy endpoint and save the result",
        description="Call an ikproxy /run endpoint, show its progress, write the first "
        "image output to --output and print the other outputs as JSON.",
    )
    run.add_argument("url", help="the endpoint, e.g. http://127.0.0.1:8000/api/run")
    run.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a run parameter (repeatable)",
    )
    run.add_argument("--image", "-i", type=Path, help="an image file to upload (a POST)")
    run.add_argument("--output", "-o", type=Path, help="where to write the first image output")
    run.add_argument("--format", choices=("sse", "ndjson"), default=None, help="stream format")
    run.add_argument(
        "--header",
        "-H",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra request header, e.g. 'Authorization: Bearer KEY' (repeatable)",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    run.set_defaults(handler=_run)
    return parser


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default: {DEFAULT_HOST}")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"default: {DEFAULT_PORT} (0: any free port)",
    )


# -- demo and serve ----------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from ikproxy.demo.app import create_demo_app, deployment_from_env

    if args.metrics:
        from ikproxy.demo.metrics import MISSING, available

        if not available():
            raise _UsageError(MISSING)
    if args.workers:
        return _demo_on_workers(args)
    try:
        deployment = deployment_from_env()
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    label = "demo" if deployment is None else "demo (on the SCALE deployment in IKOMIA_ENDPOINT)"
    if args.metrics:
        label += " (metrics at /metrics/)"
    return _serve(
        lambda: create_demo_app(deployment, metrics=args.metrics), args.host, args.port, label
    )


def _demo_on_workers(args: argparse.Namespace) -> int:
    from ikproxy.demo.app import create_demo_app
    from ikproxy.demo.cluster import ClusterError, demo_cluster

    try:
        with demo_cluster(args.workers):
            from ikproxy.demo.workers import deployment

            label = f"demo (on {args.workers} Celery worker{'s' if args.workers > 1 else ''})"
            if args.metrics:
                label += " (metrics at /metrics/)"
            return _serve(
                lambda: create_demo_app(deployment, metrics=args.metrics),
                args.host,
                args.port,
                label,
            )
    except ClusterError as exc:
        raise _UsageError(str(exc)) from None


def _serve_scale(args: argparse.Namespace) -> int:
    from ikproxy.demo.app import create_demo_app, deployment_from_env

    if not args.endpoint:
        raise _UsageError("--endpoint URL is required (or set IKOMIA_ENDPOINT)")
    try:
        deployment = deployment_from_env(args.endpoint)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    return _serve(lambda: create_demo_app(deployment), args.host, args.port, "serve")


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the server starts, so a taken port is caught here."""
    if not 0 <= port <= 65535:
        raise _UsageError(f"--port must be from 0 to 65535, not {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise _UsageError(f"unknown host {host!r}") from None
    family = infos[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def _serve(make_app: Callable[[], Any], host: str, port: int, label: str) -> int:
    try:
        import uvicorn
    except ImportError:
        print("ikproxy: this command needs uvicorn: pip install 'ikproxy[server]'", file=sys.stderr)
        return 1
    try:
        sock = _bind(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"ikproxy: port {port} on {host} is already in use. Stop the program using it, "
                f"or choose another port: --port {port + 1}",
                file=sys.stderr,
            )
        else:
            print(
                f"ikproxy: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr
            )
        return 1
    url = _url(sock)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        make_app(), log_level="warning", lifespan="on", timeout_graceful_shutdown=3
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                print(f"ikproxy {label} running at {url}", flush=True)
                print("Press Ctrl+C to stop.", flush=True)

    # uvicorn handles SIGINT and SIGTERM while it runs, then re-raises the signal
    # once it has shut down; exit quietly with status 0 then.
    signal.signal(signal.SIGINT, _exit_quietly)
    signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


# -- run -------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    import httpx

    from ikproxy.browser import run_sync

    if not args.url.startswith(("http://", "https://")):
        raise _UsageError(f"the URL must start with http:// or https://, not {args.url!r}")
    params = _params(args.param)
    headers = _headers(args.header)
    image = _read_image(args.image) if args.image is not None else None
    progress = _ProgressLine(sys.stderr, quiet=args.quiet)
    timeout = httpx.Timeout(60.0, connect=10.0)
    try:
        with httpx.Client(
            timeout=timeout, headers={"User-Agent": f"ikproxy/{__version__}"}
        ) as http:
            results = run_sync(
                args.url,
                params,
                image=image,
                headers=headers,
                format=args.format,
                on_progress=progress.update,
                client=http,
            )
    except StreamError as exc:
        progress.abandon()
        cause = exc.__cause__
        if exc.code == "network_error" and cause is not None:
            reason = str(cause) or type(cause).__name__
            print(f"error: cannot reach {args.url}: {reason}", file=sys.stderr)
            return 1
        where = f" (HTTP {exc.status_code})" if exc.status_code else ""
        print(f"error{where}: {exc.code}: {exc.message}", file=sys.stderr)
        if exc.request_id:
            print(f"request id: {exc.request_id}", file=sys.stderr)
        return 1
    except IncompleteStream as exc:
        progress.abandon()
        print(f"error: {exc.code}: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        progress.abandon()
        print(f"error: cannot reach {args.url}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    progress.finish()
    return _write_results(results, args.output)


def _params(pairs: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise _UsageError(f"--param expects NAME=VALUE, not {pair!r}")
        if name in params:
            raise _UsageError(f"--param {name} given more than once")
        params[name] = value
    return params


def _headers(lines: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise _UsageError(f"--header expects 'NAME: VALUE', not {line!r}")
        headers[name.strip()] = value.strip()
    return headers


def _read_image(path: Path) -> tuple[str, bytes]:
    try:
        return path.name, path.read_bytes()
    except OSError as exc:
        raise _UsageError(f"cannot read --image {str(path)!r}: {exc.strerror or exc}") from None


def _write_results(results: Any, output: Path | None) -> int:
    from ikproxy.io import ImageIO, RefIO

    image_written = False
    for index, item in enumerate(results.get_outputs()):
        if isinstance(item, RefIO) and item.of == "image" and output is not None:
            item = item.to_image()  # a large image the proxy serves by reference
        if isinstance(item, ImageIO) and not image_written:
            image_written = True
            if output is None:
                print(
                    f"output {index}: {item.format or 'an'} image (pass --output PATH to save it)",
                    file=sys.stderr,
                )
                continue
            try:
                output.write_bytes(item.to_bytes())
            except OSError as exc:
                print(
                    f"error: cannot write {str(output)!r}: {exc.strerror or exc}", file=sys.stderr
                )
                return 1
            print(
                f"wrote {output} ({item.format or 'image'}, {len(item.to_bytes())} bytes)",
                file=sys.stderr,
            )
            continue
        print(json.dumps(item.to_json(), ensure_ascii=False))
    return 0


class _ProgressLine:
    """Progress on stderr: a bar redrawn with `\\r` on a terminal, one line per event otherwise."""

    def __init__(self, stream: IO[str], *, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.glyphs = _glyphs(stream)
        self._width = 0

    def update(self, progress: Progress) -> None:
        if self.quiet:
            return
        if self.tty:
            self._draw(_bar_line(progress, self.glyphs))
        else:
            print(_event_line(progress), file=self.stream, flush=True)

    def _draw(self, text: str) -> None:
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def finish(self) -> None:
        if self.tty and self._width and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    abandon = finish


_BLOCKS = ("█", "░", "·")
_ASCII = ("#", "-", ".")


def _glyphs(stream: IO[str]) -> tuple[str, str, str]:
    """Done, to do and unknown: block characters if the stream can encode them."""
    encoding = getattr(stream, "encoding", None)
    if encoding is None:  # an in-memory stream takes any text
        return _BLOCKS
    try:
        "".join(_BLOCKS).encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return _ASCII
    return _BLOCKS


def _bar_line(progress: Progress, glyphs: tuple[str, str, str] = _BLOCKS) -> str:
    done, todo, unknown = glyphs
    fraction = progress.fraction
    if fraction is None and progress.done:
        fraction = 1.0
    if fraction is None:
        bar = unknown * _BAR_WIDTH
        percent = "  --%"
    else:
        filled = round(fraction * _BAR_WIDTH)
        bar = done * filled + todo * (_BAR_WIDTH - filled)
        percent = f"{fraction * 100:4.0f}%"
    left = _eta_text(progress)
    return f"{progress.state:<8} {bar} {percent}" + (f"  {left}" if left else "")


def _event_line(progress: Progress) -> str:
    parts = ["result" if progress.done else "progress", progress.state]
    if progress.fraction is not None:
        parts.append(f"{progress.fraction * 100:.0f}%")
    left = _eta_text(progress)
    if left:
        parts.append(left)
    return " ".join(parts)


def _eta_text(progress: Progress) -> str:
    if progress.done:
        return "done"
    upper = progress.eta[1] if progress.eta[1] is not None else progress.eta[0]
    if upper is None:
        return ""
    seconds = upper / 1000
    return f"~{seconds:.1f} s left" if seconds < 10 else f"~{seconds:.0f} s left"

"""`python -m ikproxy.testing`: serve a fake Ikomia SCALE deployment until stopped.

It serves the default one-task image workflow (`infer_demo`: image in, the same
image out) and prints the URL and token to use. Point a SCALE client at it with
both the API URL and the endpoint URL set to the printed URL. Ctrl-C or
SIGTERM stops it cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from ikproxy.testing._fake import FakeScale
from ikproxy.testing._server import Server, bind, url_of
from ikproxy.testing._workflow import default_workflow


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ikproxy.testing",
        description="Serve a fake Ikomia SCALE deployment (JWT exchange, workflow, run, "
        "polling) for local development and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind; 0 picks one (8765)")
    parser.add_argument("--token", default="fake-token", help="API token to accept (fake-token)")
    parser.add_argument("--polls", type=int, default=2, help="not-done answers before SUCCESS (2)")
    parser.add_argument(
        "--next-poll-in", type=int, default=500, help="advised delay between polls, in ms (500)"
    )
    parser.add_argument("--long-polling", action="store_true", help="advise long polling")
    parser.add_argument(
        "--legacy", action="store_true", help="answer runs with a bare uuid and never advise"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added before every answer (0)"
    )
    parser.add_argument(
        "--input-type",
        choices=["image", "video", "file_path", "folder_path"],
        default="image",
        help="the workflow input's data type (image)",
    )
    return parser


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        fake = FakeScale(
            default_workflow(f"IODataType.{args.input_type.upper()}"),
            token=args.token,
            polls_before_done=args.polls,
            next_poll_in=args.next_poll_in,
            next_poll_long=args.long_polling,
            legacy=args.legacy,
            latency=args.latency,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    url = url_of(sock)

    def announce() -> None:
        print(f"Fake Ikomia SCALE server running on {url} (Ctrl-C to stop)", flush=True)
        print(f"  API, endpoint, storage:   {url}", flush=True)
        print(f"  API token:                {args.token}", flush=True)

    # uvicorn handles SIGINT and SIGTERM while it runs, then re-raises the signal
    # once it has shut down; these handlers turn that into a quiet exit.
    signal.signal(signal.SIGINT, _exit_quietly)
    signal.signal(signal.SIGTERM, _exit_quietly)
    server = Server(fake.app, announce, log_level="info")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

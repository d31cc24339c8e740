"""A typed Python client for an ikproxy endpoint: httpx, NDJSON, `process_json_stream`.

The Python counterpart of a typed RPC client in a TypeScript front end: one async
function with typed arguments and a typed result, errors as exceptions.

    python examples/frontends/python/consumer.py "a lighthouse at dawn" \\
        --url http://127.0.0.1:8000/api/run --output lighthouse.png

Start a server first, for instance `python -m ikproxy demo`. If the server asks
for a key, pass `--key` (sent as `Authorization: Bearer <key>`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from ikproxy import ImageIO, Progress, StreamError
from ikproxy.browser import process_json_stream, process_streaming_response


async def generate(
    prompt: str,
    *,
    url: str = "http://127.0.0.1:8000/api/run",
    key: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> ImageIO:
    """Run `prompt` through the endpoint; return the picture.

    Raises `ikproxy.StreamError` (with `.code`, `.message`, `.request_id` and,
    for a refused request, `.status_code`) or `ikproxy.IncompleteStream`.
    """
    headers = {"Accept": "application/x-ndjson"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    timeout = httpx.Timeout(60.0, connect=10.0)  # keepalives arrive well within 60 s
    async with (
        httpx.AsyncClient(timeout=timeout) as http,
        http.stream("GET", url, params={"prompt": prompt}, headers=headers) as response,
    ):
        if response.status_code >= 400:  # refused before any stream: raises StreamError
            await process_streaming_response(response)
        results = await process_json_stream(response.aiter_bytes(), on_progress)
    return results.get_output(0, expect=ImageIO)


def _show(progress: Progress) -> None:
    percent = "" if progress.fraction is None else f" {progress.fraction:.0%}"
    upper = progress.eta[1]
    left = "" if upper is None or progress.done else f", ~{upper / 1000:.1f} s left"
    print(f"{progress.state}{percent}{left}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--url", default="http://127.0.0.1:8000/api/run")
    parser.add_argument("--key", default=None, help="an API key, if the server asks for one")
    parser.add_argument("--output", type=Path, default=Path("result.png"))
    args = parser.parse_args()
    try:
        image = asyncio.run(generate(args.prompt, url=args.url, key=args.key, on_progress=_show))
    except StreamError as exc:
        print(f"error: {exc.code}: {exc.message} (request {exc.request_id})", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    args.output.write_bytes(image.to_bytes())
    print(f"wrote {args.output} ({image.format}, {len(image.to_bytes())} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

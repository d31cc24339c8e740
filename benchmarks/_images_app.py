"""The app `benchmarks/images_rss.py` serves: image uploads checked against a pixel limit
(`$IKPROXY_BENCH_MAX_PIXELS`), one worker; an accepted image gets a one-event run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ikproxy import Progress, Results, TaskIO
from ikproxy.asgi import create_app


class Echo:
    async def run_stream(
        self, *inputs: Any, parameters: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncIterator[Progress]:
        yield Progress("SUCCESS", run_id="0", results=Results((TaskIO("text", "ok"),)))


app = create_app(
    Echo(),
    rate_limit=None,
    max_image_pixels=int(os.environ["IKPROXY_BENCH_MAX_PIXELS"]),
    max_upload_bytes=64 * 1024**2,
)

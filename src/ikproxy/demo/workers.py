"""The demo on Celery workers: its tasks in a `CeleryDeployment` (`ikproxy demo --workers N`).

One module for the web app and the workers, as any Celery app of ikproxy:

    IKPROXY_DEMO_REDIS=redis://127.0.0.1:6379/0 celery -A ikproxy.demo.workers:celery_app worker
    IKPROXY_DEMO_REDIS=redis://127.0.0.1:6379/0 uvicorn --factory ikproxy.demo.workers:create_app

Redis (`IKPROXY_DEMO_REDIS`, default `redis://127.0.0.1:6379/0`) is the broker
and the shared store. Needs the `celery` extra.
"""

from __future__ import annotations

import os

from celery import Celery
from starlette.applications import Starlette

from ikproxy.demo.tasks import add_demo_tasks
from ikproxy.deployments.celery import CeleryDeployment
from ikproxy.stores.redis import RedisStore

__all__ = ["REDIS_URL", "celery_app", "create_app", "deployment"]

#: The Redis of the demo: its broker and its store.
REDIS_URL = os.environ.get("IKPROXY_DEMO_REDIS", "redis://127.0.0.1:6379/0")

celery_app = Celery("ikproxy-demo", broker=REDIS_URL)
celery_app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,  # a long task does not hold the next ones back
    worker_hijack_root_logger=False,
)
deployment = CeleryDeployment(
    celery_app, store=RedisStore(REDIS_URL, prefix="ikproxy-demo"), name="demo", timeout=60.0
)
add_demo_tasks(deployment)


def create_app() -> Starlette:
    """The demo's web app on these workers (`uvicorn --factory ikproxy.demo.workers:create_app`)."""
    from ikproxy.demo.app import create_demo_app

    return create_demo_app(deployment)

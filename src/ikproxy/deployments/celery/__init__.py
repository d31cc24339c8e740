"""Self-hosted models at scale: task functions run by Celery workers, streamed by any instance.

`CeleryDeployment` (the `ikproxy[celery]` extra) registers task functions as
Celery tasks; the workers write each run's progress and result to the shared
`RedisStore`, where every web instance follows it live. See the Celery guide.
"""

from __future__ import annotations

from ikproxy.deployments.celery.deployment import CeleryDeployment
from ikproxy.deployments.tasks import TaskFailed, Update, check_cancelled

__all__ = ["CeleryDeployment", "TaskFailed", "Update", "check_cancelled"]

"""ikproxy: stream long AI runs from any Python web backend to the browser.

Run a job on Ikomia SCALE (or on local Python callables), and stream its
progress and results as Server-Sent Events or NDJSON while the API token
stays on the server.
"""

from __future__ import annotations

from .__about__ import __version__
from .deployments.local import LocalDeployment, TaskFailed, Update
from .deployments.scale import Client, SyncClient
from .errors import (
    AuthenticationFailed,
    IkproxyError,
    IncompleteStream,
    InvalidParameter,
    RunNotFound,
    RunTimeout,
    StreamError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeout,
    WorkflowFailed,
)
from .io import BaseIO, ImageIO, StorageObjectIO, TaskIO
from .model import Progress, Results, State

__all__ = [
    "AuthenticationFailed",
    "BaseIO",
    "Client",
    "IkproxyError",
    "ImageIO",
    "IncompleteStream",
    "InvalidParameter",
    "LocalDeployment",
    "Progress",
    "Results",
    "RunNotFound",
    "RunTimeout",
    "State",
    "StorageObjectIO",
    "StreamError",
    "SyncClient",
    "TaskFailed",
    "TaskIO",
    "Update",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamTimeout",
    "WorkflowFailed",
    "__version__",
]

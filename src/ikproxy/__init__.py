"""ikproxy: stream long AI runs from any Python web backend to the browser.

Run a job on Ikomia SCALE (or on local Python callables), and stream its
progress and results as Server-Sent Events or NDJSON while the API token
stays on the server.
"""

from __future__ import annotations

from ikproxy.__about__ import __version__
from ikproxy.deployments.local import LocalDeployment, TaskFailed, Update
from ikproxy.deployments.scale import Client, SyncClient
from ikproxy.errors import (
    AuthenticationFailed,
    FetchError,
    IkproxyError,
    IncompleteStream,
    InvalidInput,
    InvalidParameter,
    RunNotFound,
    RunTimeout,
    StorageError,
    StorageObjectExists,
    StorageObjectNotFound,
    StreamError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeout,
    WorkflowFailed,
)
from ikproxy.fetch import Fetched, fetch_url
from ikproxy.io import BaseIO, FileIO, ImageIO, RefIO, StorageObjectIO, TaskIO
from ikproxy.model import Progress, Results, State

__all__ = [
    "AuthenticationFailed",
    "BaseIO",
    "Client",
    "FetchError",
    "Fetched",
    "FileIO",
    "IkproxyError",
    "ImageIO",
    "IncompleteStream",
    "InvalidInput",
    "InvalidParameter",
    "LocalDeployment",
    "Progress",
    "RefIO",
    "Results",
    "RunNotFound",
    "RunTimeout",
    "State",
    "StorageError",
    "StorageObjectExists",
    "StorageObjectIO",
    "StorageObjectNotFound",
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
    "fetch_url",
]

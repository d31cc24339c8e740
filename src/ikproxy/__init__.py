"""ikproxy: stream long AI runs from any Python web backend to the browser.

Run a job on Ikomia SCALE (or on local Python callables), and stream its
progress and results as Server-Sent Events or NDJSON while the API token
stays on the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ikproxy.__about__ import __version__

if TYPE_CHECKING:
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
    from ikproxy.telemetry import RunSummary, Telemetry

#: Where each top-level name lives; it is imported on first use, so that importing
#: `ikproxy.codecs` (or `ikproxy` itself) loads no client, framework or image library.
_LAZY: dict[str, str] = {
    "AuthenticationFailed": "ikproxy.errors",
    "BaseIO": "ikproxy.io",
    "Client": "ikproxy.deployments.scale",
    "FetchError": "ikproxy.errors",
    "Fetched": "ikproxy.fetch",
    "FileIO": "ikproxy.io",
    "IkproxyError": "ikproxy.errors",
    "ImageIO": "ikproxy.io",
    "IncompleteStream": "ikproxy.errors",
    "InvalidInput": "ikproxy.errors",
    "InvalidParameter": "ikproxy.errors",
    "LocalDeployment": "ikproxy.deployments.local",
    "Progress": "ikproxy.model",
    "RefIO": "ikproxy.io",
    "Results": "ikproxy.model",
    "RunNotFound": "ikproxy.errors",
    "RunSummary": "ikproxy.telemetry",
    "RunTimeout": "ikproxy.errors",
    "State": "ikproxy.model",
    "StorageError": "ikproxy.errors",
    "StorageObjectExists": "ikproxy.errors",
    "StorageObjectIO": "ikproxy.io",
    "StorageObjectNotFound": "ikproxy.errors",
    "StreamError": "ikproxy.errors",
    "SyncClient": "ikproxy.deployments.scale",
    "TaskFailed": "ikproxy.deployments.local",
    "TaskIO": "ikproxy.io",
    "Telemetry": "ikproxy.telemetry",
    "Update": "ikproxy.deployments.local",
    "UpstreamConnectionError": "ikproxy.errors",
    "UpstreamError": "ikproxy.errors",
    "UpstreamHTTPError": "ikproxy.errors",
    "UpstreamTimeout": "ikproxy.errors",
    "WorkflowFailed": "ikproxy.errors",
    "fetch_url": "ikproxy.fetch",
}

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
    "RunSummary",
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
    "Telemetry",
    "Update",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamTimeout",
    "WorkflowFailed",
    "__version__",
    "fetch_url",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

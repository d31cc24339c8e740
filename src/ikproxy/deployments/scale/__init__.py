"""Ikomia SCALE: the client, its HTTP session, its protocol, its inputs and its storage.

`client` holds the public `Client` (also `ScaleDeployment`) and `SyncClient`;
`http` the authenticated session (API token exchanged for a JWT); `protocol` the
pure encoding and decoding of SCALE's messages; `inputs` how inputs reach a run
(inline, by URL, or through `storage`, the SCALE storage client).
"""

from __future__ import annotations

from ikproxy.deployments.scale.client import (
    DEFAULT_API_URL,
    DEFAULT_HTTP_TIMEOUT,
    USER_AGENT,
    Client,
    OutputSpec,
    ScaleDeployment,
    SyncClient,
    scale_poll_schedule,
)

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_HTTP_TIMEOUT",
    "USER_AGENT",
    "Client",
    "OutputSpec",
    "ScaleDeployment",
    "SyncClient",
    "scale_poll_schedule",
]

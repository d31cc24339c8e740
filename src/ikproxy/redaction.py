"""What may be shown of a secret: a URL without its credentials, a token by its fingerprint.

One helper for every URL that reaches a log line, a repr, an exception message
or a response (store URLs, input URLs, fsspec URLs, proxies): the user info,
query and fragment are dropped, since any of them may carry a password or a
signature. A bearer secret (a store-backed run token) is shown by the first 8
hex digits of its SHA-256: enough to match log lines, useless to an attacker.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

__all__ = ["fingerprint", "redact_url"]


def redact_url(url: object) -> str:
    """`scheme://host[:port]/path` of a URL: no user info, query or fragment."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    scheme = parts.scheme.lower()
    if not host:
        return f"{scheme}:" if scheme else "<URL>"
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    shown_port = f":{port}" if port is not None and port != default else ""
    return f"{scheme}://{host.lower()}{shown_port}{parts.path}"


def fingerprint(secret: str) -> str:
    """The first 8 hex digits of the SHA-256 of `secret`: a name for it in logs."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:8]

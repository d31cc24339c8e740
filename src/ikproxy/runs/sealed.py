"""Sealed run references: an upstream run's id, encrypted and bound to a caller and an expiry.

With `Policy(resume_secret=...)` and a deployment that `SupportsAttach`, each
event id of a run carries a sealed reference to the upstream run instead of a
token of one process's memory, so any instance that shares the secret resumes
the run by attaching to it: no store, no sticky sessions.

A reference is AES-256-GCM (the `cryptography` package, the `resume` extra)
under a key derived from the secret with HKDF-SHA256. Its plaintext is the
expiry and the upstream uuid; the caller's key (see `Proxy`) is authenticated
as associated data and never carried. So a reference can be neither read,
forged, altered, nor replayed by another caller or after its expiry. Wire form,
base64url without padding::

    version (1 byte) | nonce (12) | ciphertext of [expiry (8, unix s) | kind (1) | uuid] | tag (16)

where kind 1 packs a canonical UUID in 16 bytes and kind 0 carries any other
id as UTF-8. Random 96-bit nonces are safe for far more references than a
secret should ever seal (NIST's bound is 2**32 per key).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
import time
import uuid as uuid_module
from typing import Final

from ikproxy.errors import IkproxyError

__all__ = ["MIN_SECRET_BYTES", "SEALED_PREFIX", "ExpiredReference", "InvalidReference", "Sealer"]

#: The shortest secret accepted, in bytes (the AES-256 key size).
MIN_SECRET_BYTES: Final = 32

#: What starts the token of an event id that holds a sealed reference: `s.<sealed>:<n>`.
SEALED_PREFIX: Final = "s."

_VERSION: Final = 1
_NONCE: Final = 12
_TAG: Final = 16
_HEAD: Final = struct.Struct(">QB")  # expiry, kind
_TEXT, _UUID = 0, 1
_MAX_UUID_BYTES: Final = 256
_INFO: Final = b"ikproxy sealed run reference v1"
#: The text of a reference: base64url without padding, at most the longest one sealed.
_MAX_CHARS: Final = -(-4 * (1 + _NONCE + _HEAD.size + _MAX_UUID_BYTES + _TAG) // 3)
_BASE64URL: Final = re.compile(rf"[A-Za-z0-9_-]{{1,{_MAX_CHARS}}}")
_AAD: Final = b"ikproxy run\x00"


class InvalidReference(IkproxyError, ValueError):
    """A sealed reference that does not open: malformed, altered, or sealed for another caller
    or under another secret (these cannot be told apart, by design). Answered 410, as an
    expired one: a client cannot tell a forged reference from a forgotten run."""

    code = "resume_expired"
    status = 410
    public_message = "The run to resume has expired."


class ExpiredReference(IkproxyError, ValueError):
    """A genuine sealed reference whose expiry has passed."""

    code = "resume_expired"
    status = 410
    public_message = "The run to resume has expired."


class Sealer:
    """Seals and opens run references under one secret (bytes or str, at least 32 bytes)."""

    def __init__(self, secret: bytes | str) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        if not isinstance(raw, bytes):
            raise TypeError("resume_secret must be bytes or str")
        if len(raw) < MIN_SECRET_BYTES:
            raise ValueError(f"resume_secret must be at least {MIN_SECRET_BYTES} bytes long")
        try:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF
        except ModuleNotFoundError as exc:  # an optional dependency
            raise ModuleNotFoundError(
                "resume_secret needs the cryptography package: pip install 'ikproxy[resume]'"
            ) from exc
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(raw)
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"  # never the secret

    def seal(self, uuid: str, caller: str, expires: float) -> str:
        """A reference to run `uuid`, valid for `caller` until `expires` (unix time, seconds)."""
        body = _pack_uuid(uuid)
        head = _HEAD.pack(int(expires), body[0])
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, head + body[1], _aad(caller))
        data = bytes((_VERSION,)) + nonce + sealed
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    def open(self, reference: str, caller: str, now: float | None = None) -> str:
        """The run uuid a reference holds; `InvalidReference` or `ExpiredReference` otherwise."""
        from cryptography.exceptions import InvalidTag

        # Strict: the url-safe alphabet only, no padding, and the one canonical text of
        # its bytes (the decoder would skip other characters and ignore the spare bits).
        if not _BASE64URL.fullmatch(reference) or len(reference) % 4 == 1:
            raise InvalidReference("not a sealed reference")
        try:
            data = base64.urlsafe_b64decode(reference + "=" * (-len(reference) % 4))
        except (binascii.Error, ValueError):
            raise InvalidReference("not a sealed reference") from None
        if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != reference:
            raise InvalidReference("not a sealed reference")
        if len(data) < 1 + _NONCE + _HEAD.size + _TAG or data[0] != _VERSION:
            raise InvalidReference("not a sealed reference")
        nonce, sealed = data[1 : 1 + _NONCE], data[1 + _NONCE :]
        try:
            plain = self._aead.decrypt(nonce, sealed, _aad(caller))
        except InvalidTag:
            raise InvalidReference("the sealed reference does not open") from None
        expires, kind = _HEAD.unpack_from(plain)
        if (time.time() if now is None else now) >= expires:
            raise ExpiredReference("the sealed reference has expired")
        return _unpack_uuid(kind, plain[_HEAD.size :])


def _aad(caller: str) -> bytes:
    return _AAD + bytes((_VERSION,)) + caller.encode("utf-8", "surrogatepass")


def _pack_uuid(uuid: str) -> tuple[int, bytes]:
    """(kind, bytes): 16 bytes for a canonical UUID, else the UTF-8 text."""
    try:
        parsed = uuid_module.UUID(uuid)
    except ValueError:
        parsed = None
    if parsed is not None and str(parsed) == uuid:
        return _UUID, parsed.bytes
    text = uuid.encode()
    if not text or len(text) > _MAX_UUID_BYTES:
        raise ValueError(f"a run id to seal must be 1 to {_MAX_UUID_BYTES} bytes long")
    return _TEXT, text


def _unpack_uuid(kind: int, body: bytes) -> str:
    if kind == _UUID and len(body) == 16:
        return str(uuid_module.UUID(bytes=body))
    if kind == _TEXT and body:
        return body.decode()
    raise InvalidReference("not a sealed reference")  # unreachable without the secret

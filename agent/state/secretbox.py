"""Local encryption at rest: one gateway-local key file, AES-256-GCM and HMAC.

Everything the gateway keeps for its own use that must not be readable from a
copied disk (OSDP secure-channel keys, face templates, card photos awaiting
decoding) is sealed with :class:`SecretBox`. ID numbers are kept only as keyed
hashes (:meth:`SecretBox.keyed_hash`), so a stolen database cannot be searched
for a known number without the key file.

The key file lives in the state directory with mode 0600 and holds two
independent 32-byte keys (encryption, hashing) derived with HKDF from one
random master secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE_BYTES = 12
_MASTER_BYTES = 32


class SecretBoxError(Exception):
    """A sealed blob did not open: wrong key, wrong context, or tampered."""


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master)


class SecretBox:
    """Authenticated encryption and keyed hashing under the gateway's local key."""

    def __init__(self, master: bytes) -> None:
        if len(master) != _MASTER_BYTES:
            raise ValueError(f"local master key must be {_MASTER_BYTES} bytes, got {len(master)}")
        self._aead = AESGCM(_derive(master, b"lockgw local aead v1"))
        self._hash_key = _derive(master, b"lockgw local hmac v1")

    @classmethod
    def load_or_create(cls, key_file: Path) -> SecretBox:
        """Open the key file, creating it (mode 0600) with a fresh secret if absent."""
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(_MASTER_BYTES))
                out.flush()
                os.fsync(out.fileno())
        master = key_file.read_bytes()
        if len(master) != _MASTER_BYTES:
            raise SecretBoxError(
                f"local key file {key_file} holds {len(master)} bytes, expected {_MASTER_BYTES}"
            )
        return cls(master)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        """Encrypt ``plaintext``; ``context`` (e.g. ``"osdp-scbk:3"``) binds it to its use."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, blob: bytes, context: str) -> bytes:
        """Decrypt a blob made by :meth:`seal` with the same ``context``."""
        if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != _VERSION:
            raise SecretBoxError(f"sealed blob for {context!r} is malformed")
        nonce, body = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, context.encode())
        except Exception as exc:  # cryptography raises InvalidTag
            raise SecretBoxError(f"sealed blob for {context!r} did not open") from exc

    def keyed_hash(self, value: str, context: str) -> str:
        """HMAC-SHA256 of ``value`` (hex), for lookups without keeping the value."""
        return hmac.new(
            self._hash_key, f"{context}\x00{value}".encode(), hashlib.sha256
        ).hexdigest()

"""An authorized conversation with one paired Nuki lock (sans-I/O).

:class:`Session` encrypts the gateway's messages with a fresh random nonce
each and opens the lock's, refusing anything that is not for our
authorization id, does not decrypt, fails its CRC, or repeats a nonce already
seen in this session (a replayed indication). It holds no socket: the driver
writes what it returns and feeds it what arrives.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable

from . import codec
from .pairing import Credentials

_REMEMBERED_NONCES = 1024


class SessionError(Exception):
    """A message from the lock was refused; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Session:
    """Encrypt and open messages for one authorization."""

    def __init__(
        self, credentials: Credentials, *, random: Callable[[int], bytes] = secrets.token_bytes
    ) -> None:
        self._cred = credentials
        self._random = random
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    @property
    def credentials(self) -> Credentials:
        return self._cred

    def seal(self, message: codec.Message) -> bytes:
        """``message`` ready to write on the USDIO characteristic."""
        nonce = self._random(codec.NONCE_BYTES)
        self._remember(nonce)
        return codec.encode_encrypted(self._cred.shared_key, self._cred.auth_id, message, nonce)

    def open(self, data: bytes) -> codec.Message:
        """The lock's message, or :class:`SessionError` naming why it is refused."""
        try:
            if codec.encrypted_auth_id(data) != self._cred.auth_id:
                raise SessionError("not our authorization id")
            opened = codec.decode_encrypted(self._cred.shared_key, data)
        except codec.NukiCodecError as exc:
            raise SessionError(exc.reason) from exc
        if opened.nonce in self._seen:
            raise SessionError("replayed nonce")
        self._remember(opened.nonce)
        return opened.message

    def _remember(self, nonce: bytes) -> None:
        self._seen[nonce] = None
        while len(self._seen) > _REMEMBERED_NONCES:
            self._seen.popitem(last=False)

"""The pairing exchange with a Nuki lock in pairing mode, as a pure state machine.

Feed it the lock's messages (bytes read from the pairing GDIO indications);
it answers with the bytes to write next, or with the :class:`Credentials`
once the lock confirms. Any deviation (an error report, a message out of
order, a bad authenticator from the lock) raises :class:`PairingError` and the
machine is finished: pairing starts over from the beginning.

Steps (Nuki Bluetooth API, "Pairing"): request the lock's public key, send
ours, derive the shared key (X25519 + HSalsa20: ``crypto_box_beforenm``),
answer the lock's challenge with HMAC-SHA256(k, our pk + lock pk + nonce),
send authorization data for the next challenge, verify the authorization id
the lock returns, confirm it, and wait for Status COMPLETE.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

from nacl.bindings import crypto_box_beforenm
from nacl.public import PrivateKey

from . import codec
from .codec import (
    AuthorizationAuthenticator,
    AuthorizationData,
    AuthorizationId,
    AuthorizationIdConfirmation,
    Challenge,
    Command,
    ErrorReport,
    IdType,
    PublicKey,
    RequestData,
    Status,
    StatusCode,
)

_CREDENTIALS = struct.Struct("<32sII16s")


@dataclass(frozen=True)
class Credentials:
    """What a paired gateway needs to talk to one lock (secret: store sealed)."""

    shared_key: bytes
    auth_id: int
    app_id: int
    lock_uuid: bytes

    def to_bytes(self) -> bytes:
        return _CREDENTIALS.pack(self.shared_key, self.auth_id, self.app_id, self.lock_uuid)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Credentials:
        if len(blob) != _CREDENTIALS.size:
            raise ValueError(f"Nuki credentials are {_CREDENTIALS.size} bytes, got {len(blob)}")
        key, auth_id, app_id, lock_uuid = _CREDENTIALS.unpack(blob)
        return cls(key, auth_id, app_id, lock_uuid)

    def __repr__(self) -> str:  # never print the key
        return f"Credentials(auth_id={self.auth_id}, app_id={self.app_id})"


class PairingError(Exception):
    """Pairing failed; ``reason`` says why (``not pairing``, ``bad authenticator``...)."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason if code is None else f"{reason} (lock error 0x{code:02x})")
        self.reason = reason
        self.code = code


class _Step(Enum):
    LOCK_KEY = auto()
    FIRST_CHALLENGE = auto()
    SECOND_CHALLENGE = auto()
    AUTHORIZATION_ID = auto()
    COMPLETE = auto()
    DONE = auto()


_LOCK_ERRORS: dict[int, str] = {
    codec.ErrorCode.P_NOT_PAIRING: "not pairing",
    codec.ErrorCode.P_BAD_AUTHENTICATOR: "refused our authenticator",
    codec.ErrorCode.P_MAX_USER: "lock is full",
}


class Pairing:
    """One pairing attempt from the gateway's side."""

    def __init__(
        self,
        app_id: int,
        name: str,
        *,
        private_key: PrivateKey | None = None,
        random: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._key = private_key or PrivateKey.generate()
        self._app_id = app_id
        encoded = name.encode()[:32]
        self._name = encoded.ljust(32, b"\0")
        self._random = random
        self._step = _Step.LOCK_KEY
        self._lock_pk = b""
        self._shared = b""
        self._our_nonce = b""
        self._result: Credentials | None = None

    @property
    def done(self) -> bool:
        return self._step is _Step.DONE

    def start(self) -> bytes:
        """The first message: ask the lock for its public key."""
        return codec.encode_plain(RequestData(Command.PUBLIC_KEY))

    def receive(self, data: bytes) -> bytes | Credentials:
        """Take the lock's next message; return what to write, or the credentials."""
        if self._step is _Step.DONE:
            raise PairingError("pairing already finished")
        try:
            message = codec.decode_plain(data)
        except codec.NukiCodecError as exc:
            self._step = _Step.DONE
            raise PairingError(f"unreadable message ({exc.reason})") from exc
        try:
            return self._advance(message)
        except PairingError:
            self._step = _Step.DONE
            raise

    def _advance(self, message: codec.Message) -> bytes | Credentials:
        if isinstance(message, ErrorReport):
            raise PairingError(_LOCK_ERRORS.get(message.code, "lock error"), message.code)
        ours = bytes(self._key.public_key)
        match self._step, message:
            case _Step.LOCK_KEY, PublicKey(key):
                self._lock_pk = key
                self._shared = crypto_box_beforenm(key, bytes(self._key))
                self._step = _Step.FIRST_CHALLENGE
                return codec.encode_plain(PublicKey(ours))
            case _Step.FIRST_CHALLENGE, Challenge(nonce):
                auth = codec.authenticator(self._shared, ours, self._lock_pk, nonce)
                self._step = _Step.SECOND_CHALLENGE
                return codec.encode_plain(AuthorizationAuthenticator(auth))
            case _Step.SECOND_CHALLENGE, Challenge(nonce):
                self._our_nonce = self._random(codec.CHALLENGE_BYTES)
                fields = struct.pack("<BI", IdType.BRIDGE, self._app_id) + self._name
                auth = codec.authenticator(self._shared, fields, self._our_nonce, nonce)
                self._step = _Step.AUTHORIZATION_ID
                return codec.encode_plain(
                    AuthorizationData(
                        auth, IdType.BRIDGE, self._app_id, self._name, self._our_nonce
                    )
                )
            case _Step.AUTHORIZATION_ID, AuthorizationId(auth, auth_id, lock_uuid, nonce):
                expected = codec.authenticator(
                    self._shared, struct.pack("<I", auth_id), lock_uuid, nonce, self._our_nonce
                )
                if not secrets.compare_digest(auth, expected):
                    raise PairingError("bad authenticator from the lock")
                self._result = Credentials(self._shared, auth_id, self._app_id, lock_uuid)
                confirm = codec.authenticator(self._shared, struct.pack("<I", auth_id), nonce)
                self._step = _Step.COMPLETE
                return codec.encode_plain(AuthorizationIdConfirmation(confirm, auth_id))
            case _Step.COMPLETE, Status(StatusCode.COMPLETE):
                assert self._result is not None
                self._step = _Step.DONE
                return self._result
        raise PairingError(f"unexpected {type(message).__name__} at {self._step.name.lower()}")

"""Nuki Smart Lock Bluetooth API messages: bytes in, typed messages out (sans-I/O).

Every message is ``command id (u16 LE) + payload + CRC (u16 LE)``; the CRC is
CRC-CCITT-FALSE (polynomial 0x1021, initial 0xFFFF) over command and payload.
During pairing messages travel in the clear on the pairing GDIO
characteristic. Afterwards they travel on the keyturner USDIO characteristic
encrypted: ``nonce (24) + authorization id (u32 LE) + length (u16 LE) +
XSalsa20-Poly1305(auth id + command + payload + CRC)``, keyed with the
HSalsa20-derived Curve25519 shared key (libsodium's ``crypto_box_beforenm``).
Cryptography comes from PyNaCl (libsodium); the CRC from :mod:`binascii`.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum

import nacl.exceptions
import nacl.secret

PAIRING_SERVICE = "a92ee100-5501-11e4-916c-0800200c9a66"
PAIRING_GDIO = "a92ee101-5501-11e4-916c-0800200c9a66"
KEYTURNER_SERVICE = "a92ee200-5501-11e4-916c-0800200c9a66"
KEYTURNER_GDIO = "a92ee201-5501-11e4-916c-0800200c9a66"
KEYTURNER_USDIO = "a92ee202-5501-11e4-916c-0800200c9a66"

NONCE_BYTES = 24
CHALLENGE_BYTES = 32
KEY_BYTES = 32
_ENCRYPTED_HEADER = NONCE_BYTES + 4 + 2
_MAX_MESSAGE = 512


class Command(IntEnum):
    """Command identifiers (the subset the gateway speaks)."""

    REQUEST_DATA = 0x0001
    PUBLIC_KEY = 0x0003
    CHALLENGE = 0x0004
    AUTHORIZATION_AUTHENTICATOR = 0x0005
    AUTHORIZATION_DATA = 0x0006
    AUTHORIZATION_ID = 0x0007
    KEYTURNER_STATES = 0x000C
    LOCK_ACTION = 0x000D
    STATUS = 0x000E
    ERROR_REPORT = 0x0012
    AUTHORIZATION_ID_CONFIRMATION = 0x001E


class Action(IntEnum):
    """Lock actions."""

    UNLOCK = 0x01
    LOCK = 0x02
    UNLATCH = 0x03


class LockState(IntEnum):
    """The keyturner's lock state."""

    UNCALIBRATED = 0x00
    LOCKED = 0x01
    UNLOCKING = 0x02
    UNLOCKED = 0x03
    LOCKING = 0x04
    UNLATCHED = 0x05
    UNLOCKED_LOCK_N_GO = 0x06
    UNLATCHING = 0x07
    MOTOR_BLOCKED = 0xFE
    UNDEFINED = 0xFF


class DoorSensor(IntEnum):
    """The door sensor's state."""

    UNAVAILABLE = 0x00
    DEACTIVATED = 0x01
    CLOSED = 0x02
    OPENED = 0x03
    UNKNOWN = 0x04
    CALIBRATING = 0x05


class StatusCode(IntEnum):
    """Payload of a Status message."""

    COMPLETE = 0x00
    ACCEPTED = 0x01


class ErrorCode(IntEnum):
    """Error codes of an Error Report (general, pairing ``P_``, keyturner ``K_``)."""

    BAD_CRC = 0xFD
    BAD_LENGTH = 0xFE
    UNKNOWN = 0xFF
    P_NOT_PAIRING = 0x10
    P_BAD_AUTHENTICATOR = 0x11
    P_BAD_PARAMETER = 0x12
    P_MAX_USER = 0x13
    K_NOT_AUTHORIZED = 0x20
    K_BAD_NONCE = 0x22
    K_BAD_PARAMETER = 0x23
    K_INVALID_AUTH_ID = 0x24
    K_MOTOR_BLOCKED = 0x42
    K_BUSY = 0x45


class IdType(IntEnum):
    """Who pairs: the gateway pairs as a bridge."""

    APP = 0x00
    BRIDGE = 0x01
    FOB = 0x02
    KEYPAD = 0x03


class NukiCodecError(ValueError):
    """A message that does not decode; ``reason`` names what was wrong."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# ------------------------------------------------------------------ messages
@dataclass(frozen=True)
class RequestData:
    command: int


@dataclass(frozen=True)
class PublicKey:
    key: bytes


@dataclass(frozen=True)
class Challenge:
    nonce: bytes


@dataclass(frozen=True)
class AuthorizationAuthenticator:
    authenticator: bytes


@dataclass(frozen=True)
class AuthorizationData:
    authenticator: bytes
    id_type: int
    app_id: int
    name: bytes
    nonce: bytes


@dataclass(frozen=True)
class AuthorizationId:
    authenticator: bytes
    auth_id: int
    lock_uuid: bytes
    nonce: bytes


@dataclass(frozen=True)
class AuthorizationIdConfirmation:
    authenticator: bytes
    auth_id: int


@dataclass(frozen=True)
class KeyturnerStates:
    nuki_state: int
    lock_state: int
    trigger: int
    time: tuple[int, int, int, int, int, int]
    timezone_offset: int
    critical_battery_state: int
    config_update_count: int
    lock_n_go_timer: int
    last_lock_action: int
    last_lock_action_trigger: int
    last_lock_action_completion_status: int
    door_sensor_state: int
    nightmode_active: int = 0
    accessory_battery_state: int = 0

    @property
    def battery_critical(self) -> bool:
        return bool(self.critical_battery_state & 0x01)

    @property
    def battery_percent(self) -> int:
        return (self.critical_battery_state >> 2) * 2


@dataclass(frozen=True)
class LockActionRequest:
    action: int
    app_id: int
    flags: int
    nonce: bytes
    name_suffix: bytes = b""


@dataclass(frozen=True)
class Status:
    status: int


@dataclass(frozen=True)
class ErrorReport:
    code: int
    command: int


Message = (
    RequestData
    | PublicKey
    | Challenge
    | AuthorizationAuthenticator
    | AuthorizationData
    | AuthorizationId
    | AuthorizationIdConfirmation
    | KeyturnerStates
    | LockActionRequest
    | Status
    | ErrorReport
)

_STATES = struct.Struct("<BBBHBBBBBhBBBBBBB")  # up to the door sensor
_STATES_TAIL = struct.Struct("<HB")


def _fixed(payload: bytes, size: int, what: str) -> bytes:
    if len(payload) != size:
        raise NukiCodecError("bad length", f"{what} needs {size} bytes, got {len(payload)}")
    return payload


def encode_payload(message: Message) -> tuple[int, bytes]:
    """The command id and payload bytes of ``message``."""
    match message:
        case RequestData(command):
            return Command.REQUEST_DATA, struct.pack("<H", command)
        case PublicKey(key):
            return Command.PUBLIC_KEY, _fixed(key, KEY_BYTES, "public key")
        case Challenge(nonce):
            return Command.CHALLENGE, _fixed(nonce, CHALLENGE_BYTES, "challenge")
        case AuthorizationAuthenticator(auth):
            return Command.AUTHORIZATION_AUTHENTICATOR, _fixed(auth, 32, "authenticator")
        case AuthorizationData(auth, id_type, app_id, name, nonce):
            return Command.AUTHORIZATION_DATA, (
                _fixed(auth, 32, "authenticator")
                + struct.pack("<BI", id_type, app_id)
                + _fixed(name, 32, "name")
                + _fixed(nonce, CHALLENGE_BYTES, "nonce")
            )
        case AuthorizationId(auth, auth_id, lock_uuid, nonce):
            return Command.AUTHORIZATION_ID, (
                _fixed(auth, 32, "authenticator")
                + struct.pack("<I", auth_id)
                + _fixed(lock_uuid, 16, "uuid")
                + _fixed(nonce, CHALLENGE_BYTES, "nonce")
            )
        case AuthorizationIdConfirmation(auth, auth_id):
            return Command.AUTHORIZATION_ID_CONFIRMATION, _fixed(
                auth, 32, "authenticator"
            ) + struct.pack("<I", auth_id)
        case KeyturnerStates():
            m = message
            return Command.KEYTURNER_STATES, _STATES.pack(
                m.nuki_state,
                m.lock_state,
                m.trigger,
                *m.time,
                m.timezone_offset,
                m.critical_battery_state,
                m.config_update_count,
                m.lock_n_go_timer,
                m.last_lock_action,
                m.last_lock_action_trigger,
                m.last_lock_action_completion_status,
                m.door_sensor_state,
            ) + _STATES_TAIL.pack(m.nightmode_active, m.accessory_battery_state)
        case LockActionRequest(action, app_id, flags, nonce, suffix):
            tail = _fixed(suffix, 20, "name suffix") if suffix else b""
            return Command.LOCK_ACTION, (
                struct.pack("<BIB", action, app_id, flags)
                + tail
                + _fixed(nonce, CHALLENGE_BYTES, "nonce")
            )
        case Status(status):
            return Command.STATUS, bytes([status])
        case ErrorReport(code, command):
            return Command.ERROR_REPORT, struct.pack("<BH", code, command)
    raise TypeError(f"not a Nuki message: {message!r}")


def decode_payload(command: int, payload: bytes) -> Message:
    """The typed message for ``command`` and its payload bytes."""
    n = len(payload)
    try:
        match command:
            case Command.REQUEST_DATA:
                (requested,) = struct.unpack("<H", _fixed(payload[:2], 2, "request data"))
                return RequestData(requested)
            case Command.PUBLIC_KEY:
                return PublicKey(_fixed(payload, KEY_BYTES, "public key"))
            case Command.CHALLENGE:
                return Challenge(_fixed(payload, CHALLENGE_BYTES, "challenge"))
            case Command.AUTHORIZATION_AUTHENTICATOR:
                return AuthorizationAuthenticator(_fixed(payload, 32, "authenticator"))
            case Command.AUTHORIZATION_DATA:
                _fixed(payload, 32 + 5 + 32 + 32, "authorization data")
                id_type, app_id = struct.unpack_from("<BI", payload, 32)
                return AuthorizationData(
                    payload[:32], id_type, app_id, payload[37:69], payload[69:]
                )
            case Command.AUTHORIZATION_ID:
                _fixed(payload, 32 + 4 + 16 + 32, "authorization id")
                (auth_id,) = struct.unpack_from("<I", payload, 32)
                return AuthorizationId(payload[:32], auth_id, payload[36:52], payload[52:])
            case Command.AUTHORIZATION_ID_CONFIRMATION:
                _fixed(payload, 36, "authorization id confirmation")
                (auth_id,) = struct.unpack_from("<I", payload, 32)
                return AuthorizationIdConfirmation(payload[:32], auth_id)
            case Command.KEYTURNER_STATES:
                if n < _STATES.size:
                    raise NukiCodecError(
                        "bad length", f"keyturner states needs {_STATES.size}+ bytes, got {n}"
                    )
                f = _STATES.unpack_from(payload)
                night, accessory = (
                    _STATES_TAIL.unpack_from(payload, _STATES.size)
                    if n >= _STATES.size + _STATES_TAIL.size
                    else (0, 0)
                )
                return KeyturnerStates(
                    nuki_state=f[0],
                    lock_state=f[1],
                    trigger=f[2],
                    time=(f[3], f[4], f[5], f[6], f[7], f[8]),
                    timezone_offset=f[9],
                    critical_battery_state=f[10],
                    config_update_count=f[11],
                    lock_n_go_timer=f[12],
                    last_lock_action=f[13],
                    last_lock_action_trigger=f[14],
                    last_lock_action_completion_status=f[15],
                    door_sensor_state=f[16],
                    nightmode_active=night,
                    accessory_battery_state=accessory,
                )
            case Command.LOCK_ACTION:
                if n not in (6 + 32, 6 + 20 + 32):
                    raise NukiCodecError("bad length", f"lock action of {n} bytes")
                action, app_id, flags = struct.unpack_from("<BIB", payload)
                return LockActionRequest(action, app_id, flags, payload[-32:], payload[6:-32])
            case Command.STATUS:
                return Status(_fixed(payload, 1, "status")[0])
            case Command.ERROR_REPORT:
                code, failed = struct.unpack("<BH", _fixed(payload, 3, "error report"))
                return ErrorReport(code, failed)
    except struct.error as exc:  # pragma: no cover - lengths are checked first
        raise NukiCodecError("bad length", str(exc)) from exc
    raise NukiCodecError("unknown command", f"0x{command:04x}")


# ------------------------------------------------------------------ framing
def crc(data: bytes) -> int:
    """CRC-CCITT-FALSE (poly 0x1021, init 0xFFFF), as binascii.crc_hqx computes it."""
    return binascii.crc_hqx(data, 0xFFFF)


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<H", crc(body))


def _check_crc(data: bytes) -> bytes:
    if len(data) < 4:
        raise NukiCodecError("bad length", f"message of {len(data)} bytes")
    if len(data) > _MAX_MESSAGE:
        raise NukiCodecError("bad length", f"message of {len(data)} bytes")
    (got,) = struct.unpack_from("<H", data, len(data) - 2)
    if crc(data[:-2]) != got:
        raise NukiCodecError("bad crc")
    return data[:-2]


def encode_plain(message: Message) -> bytes:
    """An unencrypted (pairing) message with its CRC."""
    command, payload = encode_payload(message)
    return _with_crc(struct.pack("<H", command) + payload)


def decode_plain(data: bytes) -> Message:
    """An unencrypted message; the CRC is checked first."""
    body = _check_crc(bytes(data))
    (command,) = struct.unpack_from("<H", body)
    return decode_payload(command, body[2:])


def encrypted_auth_id(data: bytes) -> int:
    """The clear authorization id of an encrypted message (to pick its key)."""
    if len(data) < _ENCRYPTED_HEADER:
        raise NukiCodecError("bad length", f"encrypted message of {len(data)} bytes")
    return int(struct.unpack_from("<I", data, NONCE_BYTES)[0])


def encode_encrypted(key: bytes, auth_id: int, message: Message, nonce: bytes) -> bytes:
    """``message`` encrypted for the authorization ``auth_id`` under ``nonce``."""
    command, payload = encode_payload(message)
    inner = _with_crc(struct.pack("<IH", auth_id, command) + payload)
    sealed = nacl.secret.SecretBox(key).encrypt(inner, _fixed(nonce, NONCE_BYTES, "nonce"))
    ciphertext = sealed.ciphertext
    return nonce + struct.pack("<IH", auth_id, len(ciphertext)) + ciphertext


@dataclass(frozen=True)
class Opened:
    """A decrypted message with what it arrived under."""

    auth_id: int
    nonce: bytes
    message: Message


def decode_encrypted(key: bytes, data: bytes) -> Opened:
    """Decrypt, check the inner authorization id and the CRC, and decode."""
    data = bytes(data)
    outer_id = encrypted_auth_id(data)
    nonce = data[:NONCE_BYTES]
    (length,) = struct.unpack_from("<H", data, NONCE_BYTES + 4)
    ciphertext = data[_ENCRYPTED_HEADER:]
    if length != len(ciphertext) or length > _MAX_MESSAGE:
        raise NukiCodecError("bad length", f"header says {length}, carries {len(ciphertext)}")
    try:
        inner = nacl.secret.SecretBox(key).decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError as exc:
        raise NukiCodecError("decryption failed") from exc
    body = _check_crc(inner)
    if len(body) < 6:
        raise NukiCodecError("bad length", "encrypted body too short")
    inner_id, command = struct.unpack_from("<IH", body)
    if inner_id != outer_id:
        raise NukiCodecError("auth id mismatch", f"outer {outer_id}, inner {inner_id}")
    return Opened(outer_id, nonce, decode_payload(command, body[6:]))


def authenticator(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 over the concatenated parts, keyed with the shared key."""
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()

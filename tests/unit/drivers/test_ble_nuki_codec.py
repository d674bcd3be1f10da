"""The Nuki codec, pairing machine and session: bytes only, no radio."""

from __future__ import annotations

import struct

import pytest
from nacl.bindings import crypto_box_beforenm
from nacl.public import Box, PrivateKey

from drivers.ble.nuki import Credentials, Pairing, PairingError, Session, SessionError, codec
from drivers.ble.nuki.codec import NukiCodecError


def test_spec_example_request_public_key() -> None:
    # Nuki Bluetooth API, pairing step 1: "0100030027A7".
    assert codec.encode_plain(codec.RequestData(codec.Command.PUBLIC_KEY)).hex() == "0100030027a7"
    assert codec.crc(b"123456789") == 0x29B1  # CRC-CCITT-FALSE check value


def test_shared_key_is_crypto_box_beforenm_on_both_sides() -> None:
    a, b = PrivateKey.generate(), PrivateKey.generate()
    k1 = crypto_box_beforenm(bytes(b.public_key), bytes(a))
    k2 = crypto_box_beforenm(bytes(a.public_key), bytes(b))
    assert k1 == k2 == Box(a, b.public_key).shared_key()


MESSAGES: list[codec.Message] = [
    codec.RequestData(codec.Command.CHALLENGE),
    codec.PublicKey(bytes(range(32))),
    codec.Challenge(bytes(32)),
    codec.AuthorizationAuthenticator(b"\x01" * 32),
    codec.AuthorizationData(b"\x02" * 32, 1, 0xDEADBEEF, b"gw".ljust(32, b"\0"), b"\x03" * 32),
    codec.AuthorizationId(b"\x04" * 32, 7, b"\x05" * 16, b"\x06" * 32),
    codec.AuthorizationIdConfirmation(b"\x07" * 32, 7),
    codec.KeyturnerStates(2, 1, 0, (2026, 12, 2, 13, 0, 0), -60, 0x51, 3, 0, 1, 0, 0, 2, 0, 0),
    codec.LockActionRequest(1, 42, 0, b"\x08" * 32),
    codec.LockActionRequest(3, 42, 1, b"\x08" * 32, b"door 1".ljust(20, b"\0")),
    codec.Status(codec.StatusCode.ACCEPTED),
    codec.ErrorReport(codec.ErrorCode.K_BAD_NONCE, codec.Command.LOCK_ACTION),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_plain_round_trip(message: codec.Message) -> None:
    assert codec.decode_plain(codec.encode_plain(message)) == message


def test_keyturner_states_fields() -> None:
    states = MESSAGES[7]
    assert isinstance(states, codec.KeyturnerStates)
    assert states.battery_critical and states.battery_percent == 40
    # Older firmware stops after the door sensor: still decodes.
    command, payload = codec.encode_payload(states)
    short = codec.decode_payload(command, payload[:-3])
    assert isinstance(short, codec.KeyturnerStates) and short.door_sensor_state == 2


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x01", "bad length"),
        (bytes.fromhex("0100030027a8"), "bad crc"),
        (codec.encode_plain(codec.Status(0))[:-3] + b"\x00\x00", "bad crc"),
        (b"\x99\x99" + struct.pack("<H", codec.crc(b"\x99\x99")), "unknown command"),
        (
            b"\x04\x00" + b"\x00" * 5 + struct.pack("<H", codec.crc(b"\x04\x00" + b"\x00" * 5)),
            "bad length",
        ),
    ],
)
def test_bad_plain_messages_name_the_fault(data: bytes, reason: str) -> None:
    with pytest.raises(NukiCodecError) as err:
        codec.decode_plain(data)
    assert err.value.reason == reason


KEY = bytes(range(32))


def test_encrypted_round_trip_and_every_bit_flip_refused() -> None:
    message = codec.LockActionRequest(1, 42, 0, b"\x09" * 32)
    sealed = codec.encode_encrypted(KEY, 5, message, b"\x0a" * 24)
    opened = codec.decode_encrypted(KEY, sealed)
    assert (opened.auth_id, opened.message) == (5, message)
    for i in range(len(sealed)):
        for bit in (0x01, 0x80):
            corrupt = bytearray(sealed)
            corrupt[i] ^= bit
            with pytest.raises(NukiCodecError):
                codec.decode_encrypted(KEY, bytes(corrupt))


def test_encrypted_inner_auth_id_must_match_outer() -> None:
    sealed = codec.encode_encrypted(KEY, 5, codec.Status(0), b"\x0b" * 24)
    relabelled = sealed[:24] + struct.pack("<I", 6) + sealed[28:]
    with pytest.raises(NukiCodecError) as err:  # the clear id is checked against the sealed one
        codec.decode_encrypted(KEY, relabelled)
    assert err.value.reason == "auth id mismatch"


def _credentials(auth_id: int = 5) -> Credentials:
    return Credentials(KEY, auth_id, 42, b"\x00" * 16)


def test_session_refuses_replay_foreign_id_and_wrong_key() -> None:
    ours = Session(_credentials())
    lock_side = codec.encode_encrypted(KEY, 5, codec.Status(0), b"\x0c" * 24)
    assert ours.open(lock_side) == codec.Status(0)
    with pytest.raises(SessionError, match="replayed nonce"):
        ours.open(lock_side)
    with pytest.raises(SessionError, match="not our authorization id"):
        ours.open(codec.encode_encrypted(KEY, 6, codec.Status(0), b"\x0d" * 24))
    other = bytes(31) + b"\x01"
    with pytest.raises(SessionError, match="decryption failed"):
        ours.open(codec.encode_encrypted(other, 5, codec.Status(0), b"\x0e" * 24))
    # Our own message reflected back is a replay too.
    with pytest.raises(SessionError, match="replayed nonce"):
        ours.open(ours.seal(codec.Status(0)))


def test_credentials_round_trip_and_never_print_the_key() -> None:
    cred = _credentials()
    assert Credentials.from_bytes(cred.to_bytes()) == cred
    assert KEY.hex() not in repr(cred)
    with pytest.raises(ValueError, match="bytes"):
        Credentials.from_bytes(b"short")


def test_pairing_refuses_out_of_order_and_reports_lock_errors() -> None:
    pairing = Pairing(42, "gw")
    pairing.start()
    with pytest.raises(PairingError, match="unexpected Challenge"):
        pairing.receive(codec.encode_plain(codec.Challenge(bytes(32))))
    assert pairing.done
    pairing = Pairing(42, "gw")
    pairing.start()
    error = codec.ErrorReport(codec.ErrorCode.P_NOT_PAIRING, codec.Command.REQUEST_DATA)
    with pytest.raises(PairingError) as err:
        pairing.receive(codec.encode_plain(error))
    assert err.value.code == codec.ErrorCode.P_NOT_PAIRING
    with pytest.raises(PairingError, match="unreadable"):
        Pairing(1, "x").receive(b"\x00\x01\x02")


def test_pairing_against_a_lock_in_the_test() -> None:
    """The whole exchange, with the lock's side computed here from the spec."""
    lock_key, nonces = PrivateKey.generate(), [b"\x11" * 32, b"\x22" * 32, b"\x33" * 32]
    pairing = Pairing(42, "gw", random=lambda n: b"\x44" * n)
    assert codec.decode_plain(pairing.start()) == codec.RequestData(codec.Command.PUBLIC_KEY)
    out = pairing.receive(codec.encode_plain(codec.PublicKey(bytes(lock_key.public_key))))
    assert isinstance(out, bytes)
    client_pk = codec.decode_plain(out)
    assert isinstance(client_pk, codec.PublicKey)
    shared = crypto_box_beforenm(client_pk.key, bytes(lock_key))
    out = pairing.receive(codec.encode_plain(codec.Challenge(nonces[0])))
    assert isinstance(out, bytes)
    assert codec.decode_plain(out) == codec.AuthorizationAuthenticator(
        codec.authenticator(shared, client_pk.key, bytes(lock_key.public_key), nonces[0])
    )
    out = pairing.receive(codec.encode_plain(codec.Challenge(nonces[1])))
    assert isinstance(out, bytes)
    data = codec.decode_plain(out)
    assert isinstance(data, codec.AuthorizationData) and data.id_type == codec.IdType.BRIDGE
    ident, uuid = struct.pack("<I", 9), b"\x55" * 16
    mac = codec.authenticator(shared, ident, uuid, nonces[2], data.nonce)
    out = pairing.receive(codec.encode_plain(codec.AuthorizationId(mac, 9, uuid, nonces[2])))
    assert isinstance(out, bytes)
    assert codec.decode_plain(out) == codec.AuthorizationIdConfirmation(
        codec.authenticator(shared, ident, nonces[2]), 9
    )
    result = pairing.receive(codec.encode_plain(codec.Status(codec.StatusCode.COMPLETE)))
    assert result == Credentials(shared, 9, 42, uuid)

"""A simulated Nuki Smart Lock: the lock side of the Bluetooth API on a Bumble GATT server.

Written from the public specification, independently of ``drivers/ble``: its
own message layout, CRC (CRC-CCITT-FALSE via :func:`binascii.crc_hqx`) and
crypto calls (PyNaCl). It has a relay (the bolt motor), a door sensor, a
battery, a pairing mode and faults: out of range (links drop as supervision
timeouts, advertising stops), slow answers, a wrong key (answers sealed with
a key nobody shares), a pairing reset (all authorizations forgotten), plus a
log of every message it refused and why.

Each state change bumps a counter carried in the advertisement (an iBeacon
whose minor is the counter), so a listening gateway knows to read states.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import os
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bumble import hci
from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.host import Host
from bumble.transport.common import AsyncPipeSink
from nacl.bindings import crypto_box_beforenm
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey
from nacl.secret import SecretBox

from .radio import VirtualRadio, drop_links

PAIRING_SERVICE = "a92ee100-5501-11e4-916c-0800200c9a66"
PAIRING_GDIO = "a92ee101-5501-11e4-916c-0800200c9a66"
KEYTURNER_SERVICE = "a92ee200-5501-11e4-916c-0800200c9a66"
KEYTURNER_GDIO = "a92ee201-5501-11e4-916c-0800200c9a66"
KEYTURNER_USDIO = "a92ee202-5501-11e4-916c-0800200c9a66"

# command ids
REQUEST_DATA, PUBLIC_KEY, CHALLENGE, AUTH_AUTHENTICATOR, AUTH_DATA, AUTH_ID = 1, 3, 4, 5, 6, 7
KEYTURNER_STATES, LOCK_ACTION, STATUS, ERROR_REPORT, AUTH_ID_CONFIRM = 0x0C, 0x0D, 0x0E, 0x12, 0x1E
# error codes
BAD_CRC, BAD_LENGTH, P_NOT_PAIRING, P_BAD_AUTH = 0xFD, 0xFE, 0x10, 0x11
K_BAD_NONCE, K_BAD_PARAMETER, K_INVALID_AUTH_ID = 0x22, 0x23, 0x24
# lock states
LOCKED, UNLOCKING, UNLOCKED, LOCKING, UNLATCHED, UNLATCHING = 1, 2, 3, 4, 5, 7
DOOR_CODES = {"closed": 2, "open": 3, "unknown": 4, "none": 0}


def _crc(data: bytes) -> bytes:
    return struct.pack("<H", binascii.crc_hqx(data, 0xFFFF))


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


def _plain(command: int, payload: bytes) -> bytes:
    body = struct.pack("<H", command) + payload
    return body + _crc(body)


@dataclass
class _Pairing:
    client_pk: bytes = b""
    shared: bytes = b""
    nonce: bytes = b""
    step: str = "idle"
    auth_id: int = 0
    app_id: int = 0


@dataclass
class _Peer:
    pairing: _Pairing = field(default_factory=_Pairing)
    challenge: bytes | None = None


@dataclass
class LockAction:
    """One action the lock carried out (the relay moved)."""

    action: int
    auth_id: int
    at: float


class SimNukiLock:
    """One lock on the virtual radio."""

    def __init__(
        self,
        radio: VirtualRadio,
        address: str,
        *,
        name: str = "Nuki_SIM",
        pairing_mode: bool = False,
        battery_percent: int = 80,
        door: str = "closed",
        motor_s: float = 0.02,
        advertising_ms: float = 100.0,
    ) -> None:
        self.radio = radio
        self.address = address.upper()
        self.name = name
        self.pairing_mode = pairing_mode
        self.battery_percent = battery_percent
        self.door = door
        self.motor_s = motor_s
        self.advertising_ms = advertising_ms
        self.lock_state = LOCKED
        self.relay_energised = False
        self.slow_s = 0.0
        self.wrong_key = False
        self.in_range = True
        self.uuid = os.urandom(16)
        self._key = PrivateKey.generate()
        self.authorizations: dict[int, tuple[bytes, int]] = {}  # auth id -> (key, app id)
        self._next_auth_id = 1
        self._peers: dict[int, _Peer] = {}
        self._seen_nonces: set[bytes] = set()
        self.refused: Counter[str] = Counter()
        self.actions: list[LockAction] = []
        self.state_counter = 0
        self.controller = Controller(name, link=radio.link, public_address=self.address)
        self.device = Device(
            name=name,
            address=hci.Address(self.address),
            host=Host(self.controller, AsyncPipeSink(self.controller)),
        )
        self._chars: dict[str, Characteristic[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._advertising = asyncio.Lock()  # one advertising update at a time

    # ------------------------------------------------------------ setup
    async def start(self) -> None:
        self._build_gatt()
        self.device.on(self.device.EVENT_CONNECTION, self._on_connection)
        await self.device.power_on()
        await self._advertise()

    def _char(self, uuid: str) -> Characteristic[Any]:
        def on_write(connection: Connection, value: bytes) -> None:
            self._spawn(self._handle(uuid, connection, bytes(value)))

        char: Characteristic[Any] = Characteristic(
            UUID(uuid),
            Characteristic.Properties.WRITE | Characteristic.Properties.INDICATE,
            Characteristic.Permissions.WRITEABLE,
            CharacteristicValue(write=on_write),
        )
        self._chars[uuid] = char
        return char

    def _build_gatt(self) -> None:
        self.device.add_service(Service(UUID(PAIRING_SERVICE), [self._char(PAIRING_GDIO)]))
        self.device.add_service(
            Service(
                UUID(KEYTURNER_SERVICE),
                [self._char(KEYTURNER_GDIO), self._char(KEYTURNER_USDIO)],
            )
        )

    def _advert(self) -> bytes:
        beacon = (
            b"\x02\x15"
            + UUID(KEYTURNER_SERVICE).to_bytes()
            + struct.pack(">HHb", 0, self.state_counter & 0xFFFF, -60)
        )
        return bytes(
            AdvertisingData(
                [
                    (AdvertisingData.FLAGS, bytes([0x06])),
                    (AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
                    (AdvertisingData.MANUFACTURER_SPECIFIC_DATA, b"\x4c\x00" + beacon),
                ]
            )
        )

    async def _advertise(self) -> None:
        # Serialised: two overlapping stop/start pairs would remove one advertising set twice.
        async with self._advertising:
            if not self.in_range:
                return
            try:
                if self.device.is_advertising:
                    await self.device.stop_advertising()
                await self.device.start_advertising(
                    advertising_data=self._advert(),
                    auto_restart=True,
                    advertising_interval_min=self.advertising_ms,
                    advertising_interval_max=self.advertising_ms,
                )
            except Exception:  # the radio is being torn down (out of range, shutdown)
                self.refused["advertising update failed"] += 1

    def _changed(self) -> None:
        self.state_counter += 1
        self._spawn(self._advertise())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_connection(self, connection: Connection) -> None:
        self._peers[connection.handle] = _Peer()

    # ------------------------------------------------------------ the world
    def set_door(self, state: str) -> None:
        """The door sensor reads ``closed``, ``open``, ``unknown`` or ``none``."""
        self.door = state
        self._changed()

    def set_battery(self, percent: int) -> None:
        self.battery_percent = percent
        self._changed()

    @property
    def battery_critical(self) -> bool:
        return self.battery_percent < 20

    async def go_out_of_range(self) -> None:
        """Links drop (supervision timeout on both sides) and nothing is heard from it."""
        self.in_range = False
        async with self._advertising:
            await self.device.stop_advertising()
        drop_links(self.controller, hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR)
        if self.controller in self.radio.link.controllers:
            self.radio.link.remove_controller(self.controller)

    async def come_back(self) -> None:
        self.in_range = True
        self.radio.link.add_controller(self.controller)
        await self._advertise()

    def reset_pairing(self) -> None:
        """Forget every authorization (a factory reset of the pairing)."""
        self.authorizations.clear()

    # ------------------------------------------------------------ GATT in
    async def _indicate(self, uuid: str, connection: Connection, data: bytes) -> None:
        if connection.handle not in self._peers:
            return
        try:
            await self.device.indicate_subscriber(connection, self._chars[uuid], data)
        except Exception:  # the link went away under us: the central will time out
            self.refused["indicate failed"] += 1

    async def _handle(self, uuid: str, connection: Connection, data: bytes) -> None:
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        peer = self._peers.setdefault(connection.handle, _Peer())
        if uuid == PAIRING_GDIO:
            answer = self._pairing(peer.pairing, data)
            await self._indicate(PAIRING_GDIO, connection, answer)
        elif uuid == KEYTURNER_USDIO:
            await self._keyturner(peer, connection, data)
        else:
            self.refused["write on keyturner gdio"] += 1

    # ------------------------------------------------------------ pairing
    def _pairing(self, p: _Pairing, data: bytes) -> bytes:
        if len(data) < 4 or _crc(data[:-2]) != data[-2:]:
            self.refused["pairing bad crc"] += 1
            return _plain(ERROR_REPORT, struct.pack("<BH", BAD_CRC, 0))
        command = struct.unpack_from("<H", data)[0]
        payload = data[2:-2]
        lock_pk = bytes(self._key.public_key)

        def fail(code: int, why: str) -> bytes:
            self.refused[why] += 1
            p.step = "idle"
            return _plain(ERROR_REPORT, struct.pack("<BH", code, command))

        if not self.pairing_mode:
            return fail(P_NOT_PAIRING, "not in pairing mode")
        if command == REQUEST_DATA and payload == struct.pack("<H", PUBLIC_KEY):
            p.step = "client key"
            return _plain(PUBLIC_KEY, lock_pk)
        if command == PUBLIC_KEY and p.step == "client key" and len(payload) == 32:
            p.client_pk = payload
            p.shared = crypto_box_beforenm(payload, bytes(self._key))
            p.nonce, p.step = os.urandom(32), "authenticator"
            return _plain(CHALLENGE, p.nonce)
        if command == AUTH_AUTHENTICATOR and p.step == "authenticator" and len(payload) == 32:
            if not hmac.compare_digest(payload, _mac(p.shared, p.client_pk, lock_pk, p.nonce)):
                return fail(P_BAD_AUTH, "bad pairing authenticator")
            p.nonce, p.step = os.urandom(32), "authorization data"
            return _plain(CHALLENGE, p.nonce)
        if command == AUTH_DATA and p.step == "authorization data" and len(payload) == 101:
            auth, fields, client_nonce = payload[:32], payload[32:69], payload[69:]
            if not hmac.compare_digest(auth, _mac(p.shared, fields, client_nonce, p.nonce)):
                return fail(P_BAD_AUTH, "bad authorization data authenticator")
            p.app_id = struct.unpack_from("<I", fields, 1)[0]
            p.auth_id = self._next_auth_id
            p.nonce, p.step = os.urandom(32), "confirmation"
            ident = struct.pack("<I", p.auth_id)
            mac = _mac(p.shared, ident, self.uuid, p.nonce, client_nonce)
            return _plain(AUTH_ID, mac + ident + self.uuid + p.nonce)
        if command == AUTH_ID_CONFIRM and p.step == "confirmation" and len(payload) == 36:
            ident = struct.pack("<I", p.auth_id)
            if payload[32:] != ident or not hmac.compare_digest(
                payload[:32], _mac(p.shared, ident, p.nonce)
            ):
                return fail(P_BAD_AUTH, "bad confirmation authenticator")
            self.authorizations[p.auth_id] = (p.shared, p.app_id)
            self._next_auth_id += 1
            self.pairing_mode = False
            p.step = "idle"
            return _plain(STATUS, b"\x00")
        return fail(K_BAD_PARAMETER, "pairing message out of order")

    # ------------------------------------------------------------ keyturner
    async def _keyturner(self, peer: _Peer, connection: Connection, data: bytes) -> None:
        if len(data) < 30:
            self.refused["short message"] += 1
            return
        nonce, auth_id, length = data[:24], *struct.unpack_from("<IH", data, 24)
        entry = self.authorizations.get(auth_id)
        if entry is None:
            self.refused["unknown authorization"] += 1
            body = _plain(ERROR_REPORT, struct.pack("<BH", K_INVALID_AUTH_ID, 0))
            await self._indicate(KEYTURNER_GDIO, connection, body)
            return
        key = entry[0]
        try:
            inner = SecretBox(key).decrypt(data[30:], nonce)
        except CryptoError:
            self.refused["decryption failed"] += 1  # nothing we could answer under that key
            return

        async def answer(command: int, payload: bytes) -> None:
            await self._indicate(
                KEYTURNER_USDIO, connection, self._seal(key, auth_id, command, payload)
            )

        if length != len(data) - 30 or len(inner) < 8 or _crc(inner[:-2]) != inner[-2:]:
            self.refused["bad crc or length"] += 1
            await answer(ERROR_REPORT, struct.pack("<BH", BAD_CRC, 0))
            return
        if struct.unpack_from("<I", inner)[0] != auth_id:
            self.refused["auth id mismatch"] += 1
            return
        if nonce in self._seen_nonces:
            self.refused["replayed nonce"] += 1
            await answer(ERROR_REPORT, struct.pack("<BH", K_BAD_NONCE, 0))
            return
        self._seen_nonces.add(nonce)
        command = struct.unpack_from("<H", inner, 4)[0]
        payload = inner[6:-2]
        if command == REQUEST_DATA and payload == struct.pack("<H", KEYTURNER_STATES):
            await answer(KEYTURNER_STATES, self._states())
        elif command == REQUEST_DATA and payload == struct.pack("<H", CHALLENGE):
            peer.challenge = os.urandom(32)
            await answer(CHALLENGE, peer.challenge)
        elif command == LOCK_ACTION and len(payload) in (38, 58):
            challenge, peer.challenge = peer.challenge, None  # one use only
            if challenge is None or not hmac.compare_digest(payload[-32:], challenge):
                self.refused["stale challenge"] += 1
                await answer(ERROR_REPORT, struct.pack("<BH", K_BAD_NONCE, LOCK_ACTION))
                return
            action = payload[0]
            if action not in (1, 2, 3):
                self.refused["unknown action"] += 1
                await answer(ERROR_REPORT, struct.pack("<BH", K_BAD_PARAMETER, LOCK_ACTION))
                return
            await answer(STATUS, b"\x01")
            await self._run_action(action, auth_id, answer)
            await answer(STATUS, b"\x00")
        else:
            self.refused["unsupported command"] += 1
            await answer(ERROR_REPORT, struct.pack("<BH", K_BAD_PARAMETER, command))

    async def _run_action(self, action: int, auth_id: int, answer: Any) -> None:
        moving, final = {
            1: (UNLOCKING, UNLOCKED),
            2: (LOCKING, LOCKED),
            3: (UNLATCHING, UNLATCHED),
        }[action]
        self.lock_state = moving
        await answer(KEYTURNER_STATES, self._states())
        await asyncio.sleep(self.motor_s)
        self.lock_state = final
        self.relay_energised = final != LOCKED
        self.actions.append(LockAction(action, auth_id, time.monotonic()))
        self._changed()
        await answer(KEYTURNER_STATES, self._states())

    def _seal(self, key: bytes, auth_id: int, command: int, payload: bytes) -> bytes:
        if self.wrong_key:
            key = hashlib.sha256(b"not the shared key" + key).digest()
        body = struct.pack("<IH", auth_id, command) + payload
        nonce = os.urandom(24)
        ciphertext = SecretBox(key).encrypt(body + _crc(body), nonce).ciphertext
        return nonce + struct.pack("<IH", auth_id, len(ciphertext)) + ciphertext

    def _states(self) -> bytes:
        t = time.gmtime()
        battery = (min(self.battery_percent, 100) // 2) << 2 | int(self.battery_critical)
        return struct.pack(
            "<BBBHBBBBBhBBBBBBBHB",
            2,  # nuki state: door mode
            self.lock_state,
            0,  # trigger: system
            t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
            0,
            battery,
            0, 0,
            self.actions[-1].action if self.actions else 0,
            0, 0,
            DOOR_CODES.get(self.door, 4),
            0, 0,
        )  # fmt: skip

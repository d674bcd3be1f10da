"""The Nuki family over a :class:`~drivers.ble.protocol.GattLink`.

Thin: every byte decision is in :mod:`.codec`, :mod:`.pairing` and
:mod:`.session`; this module only writes what they return and waits for the
lock's indications with a bounded time.
"""

from __future__ import annotations

import asyncio

from ..protocol import (
    BadMessage,
    DoorSensor,
    GattLink,
    LockCommand,
    LockRefused,
    LockStatus,
    NotAuthorized,
)
from . import codec
from .codec import (
    Challenge,
    Command,
    ErrorReport,
    KeyturnerStates,
    LockActionRequest,
    RequestData,
    Status,
    StatusCode,
)
from .pairing import Credentials, Pairing, PairingError
from .session import Session, SessionError

_ACTIONS = {
    LockCommand.UNLOCK: codec.Action.UNLOCK,
    LockCommand.LOCK: codec.Action.LOCK,
    LockCommand.UNLATCH: codec.Action.UNLATCH,
}
_DOOR = {
    codec.DoorSensor.CLOSED: DoorSensor.CLOSED,
    codec.DoorSensor.OPENED: DoorSensor.OPEN,
    codec.DoorSensor.UNKNOWN: DoorSensor.UNKNOWN,
    codec.DoorSensor.CALIBRATING: DoorSensor.UNKNOWN,
}
_LOCKED = {codec.LockState.LOCKED: True, codec.LockState.UNLOCKED: False}
_UNLOCKED_STATES = {
    codec.LockState.UNLOCKED,
    codec.LockState.UNLATCHED,
    codec.LockState.UNLOCKED_LOCK_N_GO,
}


def to_status(states: KeyturnerStates) -> LockStatus:
    """The family-neutral reading of a Keyturner States message."""
    try:
        name = codec.LockState(states.lock_state).name.lower()
    except ValueError:
        name = f"0x{states.lock_state:02x}"
    locked: bool | None = _LOCKED.get(states.lock_state)  # type: ignore[call-overload]
    if states.lock_state in _UNLOCKED_STATES:
        locked = False
    return LockStatus(
        locked=locked,
        state=name,
        door=_DOOR.get(states.door_sensor_state, DoorSensor.NONE),  # type: ignore[call-overload]
        battery_critical=states.battery_critical,
        battery_percent=states.battery_percent,
    )


class NukiDriver:
    """A paired Nuki lock."""

    def __init__(self, credentials: Credentials, *, answer_timeout: float = 5.0) -> None:
        self._session = Session(credentials)
        self._timeout = answer_timeout

    async def _ask(self, link: GattLink, message: codec.Message) -> None:
        await link.write(codec.KEYTURNER_USDIO, self._session.seal(message))

    async def _next(self, link: GattLink, timeout: float | None = None) -> codec.Message:
        # Answers come encrypted on USDIO; a lock that does not know our authorization
        # id can only answer in the clear, on the keyturner GDIO.
        wait = timeout or self._timeout
        usdio = asyncio.ensure_future(link.receive(codec.KEYTURNER_USDIO, wait))
        gdio = asyncio.ensure_future(link.receive(codec.KEYTURNER_GDIO, wait))
        try:
            done, _ = await asyncio.wait({usdio, gdio}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (usdio, gdio):
                task.cancel()
        if gdio in done and not gdio.cancelled() and gdio.exception() is None:
            raise self._clear_error(gdio.result())
        data = await usdio  # its result, or its LockTimeout / LinkLost
        try:
            message = self._session.open(data)
        except SessionError as exc:
            raise BadMessage(exc.reason) from exc
        if isinstance(message, ErrorReport):
            try:
                name = codec.ErrorCode(message.code).name
            except ValueError:
                name = f"0x{message.code:02x}"
            raise LockRefused(name, message.code)
        return message

    @staticmethod
    def _clear_error(data: bytes) -> Exception:
        try:
            message = codec.decode_plain(data)
        except codec.NukiCodecError as exc:
            return BadMessage(f"keyturner gdio: {exc.reason}")
        if isinstance(message, ErrorReport) and message.code in (
            codec.ErrorCode.K_NOT_AUTHORIZED,
            codec.ErrorCode.K_INVALID_AUTH_ID,
        ):
            return NotAuthorized(codec.ErrorCode(message.code).name, message.code)
        return BadMessage(f"unexpected {type(message).__name__} on the keyturner gdio")

    async def status(self, link: GattLink) -> LockStatus:
        await self._ask(link, RequestData(Command.KEYTURNER_STATES))
        message = await self._next(link)
        if not isinstance(message, KeyturnerStates):
            raise BadMessage(f"expected keyturner states, got {type(message).__name__}")
        return to_status(message)

    async def act(self, link: GattLink, command: LockCommand) -> LockStatus:
        await self._ask(link, RequestData(Command.CHALLENGE))
        challenge = await self._next(link)
        if not isinstance(challenge, Challenge):
            raise BadMessage(f"expected a challenge, got {type(challenge).__name__}")
        cred = self._session.credentials
        await self._ask(link, LockActionRequest(_ACTIONS[command], cred.app_id, 0, challenge.nonce))
        accepted = await self._next(link)
        if accepted != Status(StatusCode.ACCEPTED):
            raise BadMessage(f"expected ACCEPTED, got {accepted!r}")
        last: KeyturnerStates | None = None
        while True:  # states while the motor turns, then COMPLETE
            message = await self._next(link, self._timeout * 4)
            if isinstance(message, KeyturnerStates):
                last = message
            elif message == Status(StatusCode.COMPLETE):
                break
            else:
                raise BadMessage(f"unexpected {type(message).__name__} during the action")
        if last is None:
            return await self.status(link)
        return to_status(last)


class NukiFamily:
    """The Nuki Smart Lock Bluetooth API as a :class:`~drivers.ble.protocol.LockFamily`."""

    name: str = "nuki"
    services: tuple[str, ...] = (codec.PAIRING_SERVICE, codec.KEYTURNER_SERVICE)
    indications: tuple[str, ...] = (
        codec.PAIRING_GDIO,
        codec.KEYTURNER_GDIO,
        codec.KEYTURNER_USDIO,
    )

    def __init__(self, *, answer_timeout: float = 5.0) -> None:
        self._timeout = answer_timeout

    async def pair(self, link: GattLink, *, app_id: int, name: str) -> bytes:
        pairing = Pairing(app_id, name)
        outgoing: bytes | Credentials = pairing.start()
        while isinstance(outgoing, bytes):
            await link.write(codec.PAIRING_GDIO, outgoing)
            data = await link.receive(codec.PAIRING_GDIO, self._timeout)
            try:
                outgoing = pairing.receive(data)
            except PairingError as exc:
                if exc.code is not None:
                    raise LockRefused(exc.reason, exc.code) from exc
                raise BadMessage(exc.reason) from exc
        return outgoing.to_bytes()

    def driver(self, credentials: bytes) -> NukiDriver:
        return NukiDriver(Credentials.from_bytes(credentials), answer_timeout=self._timeout)

"""The seam between the shared BLE transport and one lock family's protocol.

A lock family (Nuki today; a vendor protocol tomorrow) is a :class:`LockFamily`:
the GATT services and indication characteristics it needs, how to pair, and a
:class:`LockDriver` that runs lock actions and status reads over a
:class:`GattLink`. The connection manager knows nothing about any family's
bytes; a family knows nothing about connections, slots or adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class LockCommand(StrEnum):
    """What the gateway asks of a lock."""

    UNLOCK = "unlock"
    LOCK = "lock"
    UNLATCH = "unlatch"


class DoorSensor(StrEnum):
    """The door contact as the lock reports it."""

    CLOSED = "closed"
    OPEN = "open"
    UNKNOWN = "unknown"
    NONE = "none"  # no sensor fitted or deactivated


@dataclass(frozen=True)
class LockStatus:
    """One reading of a lock, family-neutral."""

    locked: bool | None  # None while moving or uncalibrated
    state: str  # the family's own name for its state, for logs and status
    door: DoorSensor
    battery_critical: bool
    battery_percent: int | None


class BleError(Exception):
    """Base of BLE errors; ``reason`` is a short fixed phrase for counters."""

    reason = "ble error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)
        self.detail = detail


class LockUnreachable(BleError):
    """No connection after the attempts (out of range, switched off, no slot)."""

    reason = "lock unreachable"


class LinkLost(BleError):
    """The connection dropped in the middle of an exchange."""

    reason = "link lost"


class LockTimeout(BleError):
    """The lock did not answer in time."""

    reason = "lock timeout"


class LockRefused(BleError):
    """The lock answered with an error report."""

    reason = "lock refused"

    def __init__(self, detail: str = "", code: int | None = None) -> None:
        super().__init__(detail)
        self.code = code


class NotAuthorized(LockRefused):
    """The lock no longer knows this gateway (its pairing was reset): pair it again."""

    reason = "not authorized"


class BadMessage(BleError):
    """The lock's answer was refused (corrupt, replayed, wrong key); nothing acted on."""

    reason = "bad message"


class AdapterDown(BleError):
    """The Bluetooth controller is gone or wedged; the manager is recovering it."""

    reason = "adapter down"


class GattLink(Protocol):
    """One live connection, as a lock driver sees it."""

    address: str

    async def write(self, characteristic: str, data: bytes) -> None:
        """Write with response (the stack uses Write Long when it does not fit)."""

    async def receive(self, characteristic: str, timeout: float) -> bytes:
        """The next indication on ``characteristic``; LockTimeout or LinkLost otherwise."""


class LockDriver(Protocol):
    """A paired lock of one family."""

    async def status(self, link: GattLink) -> LockStatus:
        """Read the lock's state."""

    async def act(self, link: GattLink, command: LockCommand) -> LockStatus:
        """Run ``command`` to completion; the state after it."""


class LockFamily(Protocol):
    """A lock protocol: what it needs from GATT, how to pair, how to drive."""

    name: str
    services: tuple[str, ...]
    indications: tuple[str, ...]

    async def pair(self, link: GattLink, *, app_id: int, name: str) -> bytes:
        """Pair with a lock in pairing mode; the credentials to keep sealed."""

    def driver(self, credentials: bytes) -> LockDriver:
        """The driver for a lock paired with ``credentials``."""

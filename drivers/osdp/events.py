"""Typed events the OSDP driver hands to the agent through ``on_event``.

Events carry bus addresses, never lock names: the agent owns the mapping to
its lock ids and to contract messages (``door.state``, ``lock.status`` and the
alerts named by :func:`alerts_for`). ``at`` is wall-clock time (``time.time()``)
when the driver observed the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DoorState(StrEnum):
    """Door states, spelled as in the contract's ``door.state`` event."""

    UNKNOWN = "unknown"
    CLOSED = "closed"
    OPEN = "open"
    FORCED = "forced"
    HELD_OPEN = "held_open"


@dataclass(frozen=True)
class DoorStateChanged:
    """The door behind a lock changed state (contract ``door.state``)."""

    address: int
    state: DoorState
    previous: DoorState
    at: float


@dataclass(frozen=True)
class LockStatusChanged:
    """Online, tamper or secure-channel status of a lock changed (``lock.status``).

    ``was_online`` is None for the first report after the driver started.
    """

    address: int
    online: bool
    tamper: bool
    sc_active: bool
    at: float
    was_online: bool | None = None
    was_tamper: bool = False


@dataclass(frozen=True)
class KeypadEntry:
    """Keys typed on the lock's keypad (digits, ``*``, ``#``) since the last report."""

    address: int
    digits: str
    at: float

    def __repr__(self) -> str:  # a PIN is a secret: keep it out of logs and reprs
        return f"KeypadEntry(address={self.address}, digits=<{len(self.digits)} keys>)"


@dataclass(frozen=True)
class CardPresented:
    """A card was read by the lock's reader; ``data`` is the raw card number."""

    address: int
    data: bytes
    format: int
    bits: int | None
    at: float

    def __repr__(self) -> str:
        return f"CardPresented(address={self.address}, format={self.format})"


@dataclass(frozen=True)
class BusStatus:
    """The serial port went away (USB adapter pulled) or came back."""

    port: str
    port_ok: bool
    at: float
    detail: str = ""


@dataclass(frozen=True)
class KeyMismatch:
    """A lock answered but the secure-channel handshake failed with its key.

    The driver keeps the lock offline (never falls back to plain mode); a
    technician must run ``lockgw locks keyset`` with the lock in install mode.
    """

    address: int
    at: float


@dataclass(frozen=True)
class CommandFailed:
    """A command the driver queued (unlock, feedback, keyset) was not completed."""

    address: int
    command: str
    at: float


LockEvent = (
    DoorStateChanged
    | LockStatusChanged
    | KeypadEntry
    | CardPresented
    | BusStatus
    | KeyMismatch
    | CommandFailed
)


def alerts_for(event: LockEvent) -> tuple[str, ...]:
    """The contract alerts an event raises (``alert.door_forced`` etc.), often none."""
    if isinstance(event, DoorStateChanged) and event.state is DoorState.FORCED:
        return ("alert.door_forced",)
    alerts: list[str] = []
    if isinstance(event, LockStatusChanged):
        if not event.online and event.was_online is not False:
            alerts.append("alert.lock_offline")
        if event.tamper and not event.was_tamper:
            alerts.append("alert.tamper")
    return tuple(alerts)

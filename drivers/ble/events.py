"""Typed events the BLE lock service hands to the agent through ``on_event``.

Addresses are BLE device addresses (``F0:00:00:00:00:01``); the agent maps
them to its lock ids and to contract messages. Door states are spelled as in
the contract's ``door.state`` (the same :class:`DoorState` the OSDP driver
uses). ``at`` is wall-clock time when the driver observed the change.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.osdp.events import DoorState


@dataclass(frozen=True)
class BleDoorChanged:
    """The door sensor's reading, judged against our unlocks (``door.state``)."""

    address: str
    state: DoorState
    previous: DoorState
    at: float


@dataclass(frozen=True)
class BleLinkChanged:
    """The lock became reachable or unreachable (``lock.status`` online).

    ``was_online`` is None for the first report after the service started.
    """

    address: str
    online: bool
    at: float
    was_online: bool | None = None
    reason: str = ""


@dataclass(frozen=True)
class BleBatteryChanged:
    """The lock's battery crossed into or out of its critical state."""

    address: str
    critical: bool
    percent: int | None
    at: float


@dataclass(frozen=True)
class BleActionFailed:
    """An unlock or relock did not complete; ``reason`` is the error's fixed phrase."""

    address: str
    command: str
    reason: str
    at: float


BleEvent = BleDoorChanged | BleLinkChanged | BleBatteryChanged | BleActionFailed


def ble_alerts_for(event: BleEvent) -> tuple[str, ...]:
    """The contract alerts an event raises, often none."""
    if isinstance(event, BleDoorChanged) and event.state is DoorState.FORCED:
        return ("alert.door_forced",)
    if isinstance(event, BleLinkChanged) and not event.online and event.was_online is not False:
        return ("alert.lock_offline",)
    if isinstance(event, BleBatteryChanged) and event.critical:
        return ("alert.lock_battery_critical",)
    return ()


@dataclass(frozen=True)
class LockBatteryChanged:
    """A lock's battery entered or left its critical state (any lock family).

    ``address`` is the lock's number on its controller (its place in the
    configured list), like an OSDP address on a bus.
    """

    address: int
    critical: bool
    percent: int | None
    at: float

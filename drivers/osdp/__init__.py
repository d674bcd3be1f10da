"""OSDP locks on an RS-485 bus: libosdp control panel + door-state derivation.

Public API: :class:`OsdpBus`, :class:`LockSpec`, :class:`LockState`, the events
in :mod:`drivers.osdp.events` and :class:`DoorStateMachine`.
"""

from .bus import (
    MAX_UNLOCK_S,
    BusStats,
    LockOffline,
    LockSpec,
    LockState,
    OsdpBus,
    OsdpError,
    UnknownLock,
)
from .doorstate import DoorStateMachine
from .events import (
    BusStatus,
    CardPresented,
    CommandFailed,
    DoorState,
    DoorStateChanged,
    KeyMismatch,
    KeypadEntry,
    LockEvent,
    LockStatusChanged,
    alerts_for,
)

__all__ = [
    "MAX_UNLOCK_S",
    "BusStats",
    "BusStatus",
    "CardPresented",
    "CommandFailed",
    "DoorState",
    "DoorStateChanged",
    "DoorStateMachine",
    "KeyMismatch",
    "KeypadEntry",
    "LockEvent",
    "LockOffline",
    "LockSpec",
    "LockState",
    "LockStatusChanged",
    "OsdpBus",
    "OsdpError",
    "UnknownLock",
    "alerts_for",
]

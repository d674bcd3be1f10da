"""Locks over Bluetooth LE: one connection manager over Bumble, a codec per lock family.

Public API: :class:`BleManager` (with :class:`ManagerSettings`, :class:`LinkState`),
the family seam in :mod:`drivers.ble.protocol`, transport specs
(:func:`parse_transport`), and the Nuki family in :mod:`drivers.ble.nuki`.
"""

from .manager import BleManager, Link, LinkState, ManagerSettings, TransportOpener
from .protocol import (
    AdapterDown,
    BadMessage,
    BleError,
    DoorSensor,
    GattLink,
    LinkLost,
    LockCommand,
    LockDriver,
    LockFamily,
    LockRefused,
    LockStatus,
    LockTimeout,
    LockUnreachable,
)
from .transport import TransportSpec, TransportSpecError, parse_transport

__all__ = [
    "AdapterDown",
    "BadMessage",
    "BleError",
    "BleManager",
    "DoorSensor",
    "GattLink",
    "Link",
    "LinkLost",
    "LinkState",
    "LockCommand",
    "LockDriver",
    "LockFamily",
    "LockRefused",
    "LockStatus",
    "LockTimeout",
    "LockUnreachable",
    "ManagerSettings",
    "TransportOpener",
    "TransportSpec",
    "TransportSpecError",
    "parse_transport",
]

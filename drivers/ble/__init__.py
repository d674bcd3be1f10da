"""Locks over Bluetooth LE: one connection manager over Bumble, a codec per lock family.

Public API: :class:`BleManager` (with :class:`ManagerSettings`, :class:`LinkState`),
:class:`BleLocks` and :class:`BleLockService` (locks as doors), the family seam in
:mod:`drivers.ble.protocol`, transport specs (:func:`parse_transport`), and the
Nuki family in :mod:`drivers.ble.nuki`.

Names load on first use: the host stack takes most of a second to import, and
reading the configuration must not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .families import FAMILIES
    from .locks import BleLocks, BleLockSpec, BleLockState, NotPaired
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
        NotAuthorized,
    )
    from .service import BleLockService
    from .transport import TransportSpec, TransportSpecError, parse_transport

_WHERE = {
    "BleManager": "manager",
    "Link": "manager",
    "LinkState": "manager",
    "ManagerSettings": "manager",
    "TransportOpener": "manager",
    "BleLocks": "locks",
    "BleLockSpec": "locks",
    "BleLockState": "locks",
    "NotPaired": "locks",
    "NotAuthorized": "protocol",
    "BleLockService": "service",
    "AdapterDown": "protocol",
    "BadMessage": "protocol",
    "BleError": "protocol",
    "DoorSensor": "protocol",
    "GattLink": "protocol",
    "LinkLost": "protocol",
    "LockCommand": "protocol",
    "LockDriver": "protocol",
    "LockFamily": "protocol",
    "LockRefused": "protocol",
    "LockStatus": "protocol",
    "LockTimeout": "protocol",
    "LockUnreachable": "protocol",
    "TransportSpec": "transport",
    "TransportSpecError": "transport",
    "parse_transport": "transport",
    "FAMILIES": "families",
}

__all__ = [
    "FAMILIES",
    "AdapterDown",
    "BadMessage",
    "BleError",
    "BleLockService",
    "BleLockSpec",
    "BleLockState",
    "BleLocks",
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
    "NotAuthorized",
    "NotPaired",
    "TransportOpener",
    "TransportSpec",
    "TransportSpecError",
    "parse_transport",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'drivers.ble' has no attribute {name!r}")
    return getattr(importlib.import_module(f"drivers.ble.{module}"), name)

"""The lock families the gateway knows, by the name used in ``ble:<family>:<address>``."""

from __future__ import annotations

from collections.abc import Callable

from .nuki import NukiFamily
from .protocol import LockFamily

FAMILIES: dict[str, Callable[[], LockFamily]] = {"nuki": NukiFamily}

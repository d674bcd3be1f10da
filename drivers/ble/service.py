"""BLE locks behind the same synchronous face as an OSDP bus.

:class:`BleLockService` runs :class:`~drivers.ble.locks.BleLocks` on its own
thread and event loop (Bumble is asyncio; the daemon's parts are started and
stopped like threads), numbers the locks by their place in the configured list
(the lock's "address" on this controller, as an OSDP address is on its bus),
and hands the agent the same typed events the OSDP driver does:
:class:`~drivers.osdp.events.DoorStateChanged`,
:class:`~drivers.osdp.events.LockStatusChanged`, plus
:class:`~drivers.ble.events.LockBatteryChanged`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from drivers.osdp.events import DoorStateChanged, LockStatusChanged

from .events import (
    BleActionFailed,
    BleBatteryChanged,
    BleDoorChanged,
    BleEvent,
    BleLinkChanged,
    LockBatteryChanged,
)
from .families import FAMILIES
from .locks import BleLocks, BleLockSpec, BleLockState
from .manager import BleManager, ManagerSettings, TransportOpener
from .protocol import AdapterDown, LockStatus
from .transport import TransportSpec

ServiceEvent = DoorStateChanged | LockStatusChanged | LockBatteryChanged

# An unlock waits for a slot, a connection and the lock's motor; past this it fails.
COMMAND_TIMEOUT_S = 20.0


class BleLockService:
    """Every BLE lock of the gateway on its own thread; a synchronous API."""

    def __init__(
        self,
        transport: TransportSpec | TransportOpener,
        locks: list[BleLockSpec],
        on_event: Callable[[ServiceEvent], None],
        settings: ManagerSettings | None = None,
        *,
        offline_after_s: float = 60.0,
        poll_s: float = 300.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._transport = transport
        self._specs = list(locks)
        self._slots = {spec.address.upper(): i for i, spec in enumerate(self._specs)}
        self._on_event = on_event
        self._settings = settings
        self._offline_after = offline_after_s
        self._poll = poll_s
        self._loop = loop  # given: run there (tests); otherwise a thread of our own
        self._own_loop = loop is None
        self._thread: threading.Thread | None = None
        self._locks: BleLocks | None = None
        self._ready = threading.Event()

    # ------------------------------------------------------------ life
    def start(self) -> None:
        if self._own_loop:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._run, name="ble-locks", daemon=True)
            self._thread.start()
        self._submit(self._start(), 10.0)

    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _start(self) -> None:
        manager = BleManager(self._transport, self._settings)
        families = {name: make() for name, make in FAMILIES.items()}
        self._locks = BleLocks(
            manager,
            families,
            self._specs,
            self._event,
            offline_after_s=self._offline_after,
            poll_s=self._poll,
        )
        await self._locks.start()

    def stop(self) -> None:
        if self._locks is not None:
            with contextlib.suppress(Exception):
                self._submit(self._locks.stop(), 5.0)
            self._locks = None
        if self._own_loop and self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._locks is not None and (
            not self._own_loop or (self._thread is not None and self._thread.is_alive())
        )

    @property
    def adapter_up(self) -> bool:
        return self._locks is not None and self._locks.manager.adapter_up

    # ------------------------------------------------------------ commands
    def unlock(self, address: int, seconds: float) -> None:
        """Unlock lock number ``address`` for ``seconds``; raises BleError if not done."""
        locks = self._need()
        self._submit(locks.unlock(self._ble_address(address), seconds), COMMAND_TIMEOUT_S)

    def relock(self, address: int) -> None:
        """Lock now."""
        self._submit(self._need().relock(self._ble_address(address)), COMMAND_TIMEOUT_S)

    def read(self, address: int) -> LockStatus:
        return self._submit(self._need().read(self._ble_address(address)), COMMAND_TIMEOUT_S)

    def feedback(self, address: int, granted: bool) -> None:
        """BLE locks give their own feedback (LED ring, motor sound): nothing to send."""

    def failures(self) -> dict[str, int]:
        """Why exchanges with locks failed, counted (no secrets, no personal data)."""
        return dict(self._locks.failures) if self._locks else {}

    def snapshot(self) -> list[BleLockState]:
        return list(self._locks.snapshot()) if self._locks else []

    def _need(self) -> BleLocks:
        if self._locks is None:
            raise AdapterDown("BLE lock service not started")
        return self._locks

    def _ble_address(self, address: int) -> str:
        if not 0 <= address < len(self._specs):
            raise KeyError(f"no BLE lock number {address}")
        return self._specs[address].address

    def _submit(self, coro: Any, timeout: float) -> Any:
        assert self._loop is not None
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    # ------------------------------------------------------------ events
    def _event(self, event: BleEvent) -> None:
        slot = self._slots.get(event.address.upper())
        if slot is None:
            return
        converted: ServiceEvent | None = None
        match event:
            case BleDoorChanged(_, state, previous, at):
                converted = DoorStateChanged(slot, state, previous, at)
            case BleLinkChanged(_, online, at, was_online):
                converted = LockStatusChanged(slot, online, False, online, at, was_online)
            case BleBatteryChanged(_, critical, percent, at):
                converted = LockBatteryChanged(slot, critical, percent, at)
            case BleActionFailed():
                return  # the caller of the command gets the error itself
        if converted is not None:
            self._on_event(converted)

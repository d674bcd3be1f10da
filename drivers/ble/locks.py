"""BLE locks as doors: unlock windows, door sensor, battery, online/offline.

:class:`BleLocks` runs on the gateway's asyncio loop over one
:class:`~drivers.ble.manager.BleManager`. For each configured lock it:

- unlocks for a window and relocks when the window ends (a Nuki-style lock
  has no timer of its own; if the door is still open it relocks once closed);
- reads the lock's states when its advertisement changes (locks announce a
  change there, so nothing polls the radio while nothing happens) and every
  ``poll_s`` in any case, feeding the door sensor into the same door state
  machine the OSDP locks use (``forced`` when opened while not unlocked by us,
  ``held_open`` past the limit);
- reports a lock offline when it has not been heard for ``offline_after_s`` or
  a connection to it failed, and online again as soon as it advertises;
- reports the battery entering and leaving its critical state.

A lock without credentials (never paired) is never driven: its unlocks fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from drivers.osdp.doorstate import DoorStateMachine
from drivers.osdp.events import DoorState

from .events import BleActionFailed, BleBatteryChanged, BleDoorChanged, BleEvent, BleLinkChanged
from .manager import BleManager, LinkState
from .protocol import (
    BadMessage,
    BleError,
    DoorSensor,
    LockCommand,
    LockDriver,
    LockFamily,
    LockStatus,
    LockUnreachable,
    NotAuthorized,
)

log = logging.getLogger(__name__)


class NotPaired(BleError):
    """The lock has no credentials: pair it first (``lockgw locks pair``)."""

    reason = "not paired"


class UnknownBleLock(BleError):
    """No configured BLE lock has that address."""

    reason = "unknown lock"


@dataclass(frozen=True)
class BleLockSpec:
    """One configured BLE lock."""

    address: str
    family: str
    credentials: bytes | None = field(default=None, repr=False)
    held_open_after_s: float = 30.0


@dataclass
class BleLockState:
    """A lock's last known state, for status screens (no secrets)."""

    address: str
    family: str
    paired: bool
    online: bool | None = None
    link: str = LinkState.UNKNOWN.value
    locked: bool | None = None
    door: str = DoorState.UNKNOWN.value
    battery_percent: int | None = None
    battery_critical: bool = False
    last_read: float | None = None


class _Lock:
    def __init__(self, spec: BleLockSpec, family: LockFamily) -> None:
        self.spec = spec
        self.family = family
        self.driver: LockDriver | None = (
            family.driver(spec.credentials) if spec.credentials else None
        )
        self.door = DoorStateMachine(spec.held_open_after_s)
        self.state = BleLockState(spec.address, spec.family, paired=self.driver is not None)
        self.read_wanted = asyncio.Event()
        self.relock_at: float | None = None
        self.busy = asyncio.Lock()  # one exchange with a lock at a time


class BleLocks:
    """Every BLE lock of the gateway, over one shared controller."""

    def __init__(
        self,
        manager: BleManager,
        families: Mapping[str, LockFamily],
        locks: list[BleLockSpec],
        on_event: Callable[[BleEvent], None],
        *,
        offline_after_s: float = 30.0,
        poll_s: float = 300.0,
        tick_s: float = 0.5,
    ) -> None:
        self.manager = manager
        self._on_event = on_event
        self._offline_after = offline_after_s
        self._poll_s = poll_s
        self._tick_s = tick_s
        self._locks: dict[str, _Lock] = {}
        for spec in locks:
            address = spec.address.upper()
            if address in self._locks:
                raise ValueError(f"BLE lock {address} appears twice")
            if spec.family not in families:
                raise ValueError(f"BLE lock {address}: unknown lock family {spec.family!r}")
            self._locks[address] = _Lock(spec, families[spec.family])
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0.0
        # Why exchanges failed: "bad message: replayed nonce", "lock timeout", ...
        self.failures: Counter[str] = Counter()
        manager.on_advert = self._advert_changed
        manager.on_state = self._link_state

    # ------------------------------------------------------------ life
    async def start(self) -> None:
        """Start the controller (retrying in the background) and watching the locks."""
        self._started = time.monotonic()
        try:
            await self.manager.start()
        except BleError as exc:
            log.warning("ble controller not up yet: %s", exc)
            self.manager.adapter_lost("not up at start")
        self._tasks.append(asyncio.ensure_future(self._watch()))
        for lock in self._locks.values():
            lock.read_wanted.set()  # a baseline reading of every lock
            self._tasks.append(asyncio.ensure_future(self._reader(lock)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.manager.stop()

    # ------------------------------------------------------------ commands
    def _lock(self, address: str) -> _Lock:
        lock = self._locks.get(address.upper())
        if lock is None:
            raise UnknownBleLock(address)
        return lock

    async def unlock(self, address: str, seconds: float) -> LockStatus:
        """Unlock now and relock after ``seconds``; raises BleError if it did not happen."""
        lock = self._lock(address)
        now = time.monotonic()
        lock.door.unlocked(now, seconds)
        try:
            status = await self._act(lock, LockCommand.UNLOCK)
        except BleError:
            lock.door.relocked()
            raise
        lock.relock_at = time.monotonic() + seconds
        return status

    async def relock(self, address: str) -> LockStatus:
        """Lock now (ends any unlock window)."""
        lock = self._lock(address)
        lock.door.relocked()
        lock.relock_at = None
        return await self._act(lock, LockCommand.LOCK)

    async def read(self, address: str) -> LockStatus:
        """Read the lock's states now."""
        lock = self._lock(address)
        driver = self._driver(lock)
        async with lock.busy, self.manager.connect(lock.spec.address, lock.family) as link:
            status = await driver.status(link)
        self._observe(lock, status)
        return status

    def snapshot(self) -> list[BleLockState]:
        return [lock.state for lock in self._locks.values()]

    def _driver(self, lock: _Lock) -> LockDriver:
        if lock.driver is None:
            raise NotPaired(lock.spec.address)
        return lock.driver

    async def _act(self, lock: _Lock, command: LockCommand) -> LockStatus:
        try:
            driver = self._driver(lock)
            async with lock.busy, self.manager.connect(lock.spec.address, lock.family) as link:
                status = await driver.act(link, command)
        except BleError as exc:
            self._count(exc)
            if isinstance(exc, NotAuthorized):
                lock.state.paired = False  # the lock forgot us: pairing needed again
            self._emit(BleActionFailed(lock.spec.address, command.value, exc.reason, time.time()))
            if isinstance(exc, LockUnreachable):
                self._set_online(lock, False, exc.reason)
            raise
        self._set_online(lock, True)
        self._observe(lock, status)
        return status

    # ------------------------------------------------------------ watching
    def _advert_changed(self, address: str, _data: bytes) -> None:
        lock = self._locks.get(address)
        if lock is not None:
            lock.read_wanted.set()

    def _link_state(self, address: str, state: LinkState) -> None:
        lock = self._locks.get(address)
        if lock is None:
            return
        lock.state.link = state.value
        if state is LinkState.IDLE and lock.state.online is not True:
            self._set_online(lock, True)
            lock.read_wanted.set()

    async def _reader(self, lock: _Lock) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lock.read_wanted.wait(), self._poll_s)
            lock.read_wanted.clear()
            if lock.driver is None or not self.manager.adapter_up:
                continue
            try:
                await self.read(lock.spec.address)
                self._set_online(lock, True)
            except LockUnreachable as exc:
                self._count(exc)
                self._set_online(lock, False, exc.reason)
            except BleError as exc:
                self._count(exc)
                log.warning("ble lock %s: reading failed: %s", lock.spec.address, exc.reason)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            now = time.monotonic()
            for lock in self._locks.values():
                self._check_presence(lock, now)
                if (changed := lock.door.tick(now)) is not None:
                    self._door(lock, changed)
                if lock.relock_at is not None and now >= lock.relock_at:
                    await self._relock_when_closed(lock)

    def _check_presence(self, lock: _Lock, now: float) -> None:
        if self.manager.state(lock.spec.address) is LinkState.CONNECTED:
            return
        seen = self.manager.last_seen(lock.spec.address)
        silent_since = seen if seen is not None else self._started
        if now - silent_since >= self._offline_after and lock.state.online is not False:
            self.manager.mark_offline(lock.spec.address)
            self._set_online(lock, False, "not heard")

    async def _relock_when_closed(self, lock: _Lock) -> None:
        if lock.door.state in (DoorState.OPEN, DoorState.HELD_OPEN, DoorState.FORCED):
            return  # relock once the door is shut; the sensor's change triggers a read
        lock.relock_at = None
        try:
            await self._act(lock, LockCommand.LOCK)
        except BleError as exc:
            log.warning("ble lock %s: relock failed: %s", lock.spec.address, exc.reason)
            lock.relock_at = time.monotonic() + 5.0  # try again; the event is recorded

    # ------------------------------------------------------------ state
    def _observe(self, lock: _Lock, status: LockStatus) -> None:
        now = time.monotonic()
        state = lock.state
        state.locked = status.locked
        state.last_read = time.time()
        if status.door in (DoorSensor.OPEN, DoorSensor.CLOSED):
            changed = lock.door.contact(now, status.door is DoorSensor.OPEN)
            if changed is not None:
                self._door(lock, changed)
        if status.battery_critical != state.battery_critical or state.battery_percent is None:
            was = state.battery_critical
            state.battery_critical = status.battery_critical
            if status.battery_critical != was:
                self._emit(
                    BleBatteryChanged(
                        lock.spec.address,
                        status.battery_critical,
                        status.battery_percent,
                        time.time(),
                    )
                )
        state.battery_percent = status.battery_percent

    def _door(self, lock: _Lock, new: DoorState) -> None:
        previous = DoorState(lock.state.door)
        lock.state.door = new.value
        self._emit(BleDoorChanged(lock.spec.address, new, previous, time.time()))

    def _set_online(self, lock: _Lock, online: bool, reason: str = "") -> None:
        was = lock.state.online
        if was is online:
            return
        lock.state.online = online
        if not online:
            lock.door.reset()
        self._emit(BleLinkChanged(lock.spec.address, online, time.time(), was, reason))

    def _count(self, exc: BleError) -> None:
        key = f"{exc.reason}: {exc.detail}" if isinstance(exc, BadMessage) else exc.reason
        self.failures[key] += 1

    def _emit(self, event: BleEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # a failing consumer never stops the locks
            log.exception("ble event consumer failed")

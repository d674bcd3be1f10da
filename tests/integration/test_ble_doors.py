"""BLE locks as doors (drivers.ble.locks): the door sensor judged against our
unlocks, relock after the window, battery alerts, offline/online by itself —
over Bumble virtual controllers and the independent lock simulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from drivers.ble import BadMessage, BleManager, LockUnreachable, ManagerSettings
from drivers.ble.events import (
    BleBatteryChanged,
    BleDoorChanged,
    BleEvent,
    BleLinkChanged,
    ble_alerts_for,
)
from drivers.ble.locks import BleLocks, BleLockSpec, NotPaired
from drivers.ble.nuki import NukiFamily
from drivers.osdp.events import DoorState
from firmware_sim.ble.nuki_lock import SimNukiLock
from firmware_sim.ble.radio import VirtualRadio

SETTINGS = ManagerSettings(
    connect_timeout=0.5, connect_attempts=2, backoff_initial=0.05, gatt_timeout=1.0, hci_timeout=0.5
)
ADDRESS = "F0:00:00:00:00:01"


async def paired_lock(radio: VirtualRadio, family: NukiFamily) -> tuple[SimNukiLock, bytes]:
    lock = SimNukiLock(radio, ADDRESS, pairing_mode=True, advertising_ms=50)
    await lock.start()
    manager = BleManager(radio.open_adapter, SETTINGS)
    await manager.start()
    async with manager.connect(ADDRESS, family) as link:
        creds = await family.pair(link, app_id=9, name="gw")
    await manager.stop()
    return lock, creds


def run(body: Callable[[BleLocks, SimNukiLock, list[BleEvent]], Awaitable[None]]) -> None:
    async def main() -> None:
        radio = VirtualRadio()
        family = NukiFamily(answer_timeout=1.0)
        lock, creds = await paired_lock(radio, family)
        events: list[BleEvent] = []
        locks = BleLocks(
            BleManager(radio.open_adapter, SETTINGS),
            {"nuki": family},
            [BleLockSpec(ADDRESS, "nuki", creds, held_open_after_s=1.0)],
            events.append,
            offline_after_s=0.6,
            tick_s=0.05,
        )
        await locks.start()
        try:
            await body(locks, lock, events)
        finally:
            await locks.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


async def until(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    end = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
    return result


def doors(events: list[BleEvent]) -> list[DoorState]:
    return [e.state for e in events if isinstance(e, BleDoorChanged)]


def test_door_opened_while_locked_is_forced() -> None:
    async def body(locks: BleLocks, lock: SimNukiLock, events: list[BleEvent]) -> None:
        await until(lambda: doors(events) == [DoorState.CLOSED])
        lock.set_door("open")
        await until(lambda: DoorState.FORCED in doors(events))
        forced = [e for e in events if isinstance(e, BleDoorChanged)][-1]
        assert ble_alerts_for(forced) == ("alert.door_forced",)

    run(body)


def test_unlock_window_open_close_and_relock() -> None:
    async def body(locks: BleLocks, lock: SimNukiLock, events: list[BleEvent]) -> None:
        await until(lambda: doors(events) == [DoorState.CLOSED])
        status = await locks.unlock(ADDRESS, 0.5)
        assert status.locked is False and lock.relay_energised
        lock.set_door("open")
        await until(lambda: DoorState.OPEN in doors(events))
        await until(lambda: DoorState.HELD_OPEN in doors(events))
        assert lock.lock_state == 3  # still unlocked while the door stands open
        lock.set_door("closed")
        await until(lambda: lock.lock_state == 1)  # relocked once closed
        assert DoorState.FORCED not in doors(events)
        assert [a.action for a in lock.actions] == [1, 2]

    run(body)


def test_battery_critical_raises_an_alert_once() -> None:
    async def body(locks: BleLocks, lock: SimNukiLock, events: list[BleEvent]) -> None:
        await until(lambda: locks.snapshot()[0].battery_percent is not None)
        lock.set_battery(10)
        alarm = await until(
            lambda: next((e for e in events if isinstance(e, BleBatteryChanged)), None)
        )
        assert alarm.critical and alarm.percent == 10
        assert ble_alerts_for(alarm) == ("alert.lock_battery_critical",)
        lock.set_door("closed")  # another reading: no second alert
        await asyncio.sleep(0.3)
        assert sum(isinstance(e, BleBatteryChanged) for e in events) == 1

    run(body)


def test_out_of_range_reports_offline_then_online_by_itself() -> None:
    async def body(locks: BleLocks, lock: SimNukiLock, events: list[BleEvent]) -> None:
        await until(lambda: locks.snapshot()[0].online is True)
        await lock.go_out_of_range()
        offline = await until(
            lambda: next(
                (e for e in events if isinstance(e, BleLinkChanged) and not e.online), None
            )
        )
        assert ble_alerts_for(offline) == ("alert.lock_offline",)
        with pytest.raises(LockUnreachable):
            await locks.unlock(ADDRESS, 1.0)
        assert lock.actions == []
        await lock.come_back()
        await until(lambda: locks.snapshot()[0].online is True)
        links = [e.online for e in events if isinstance(e, BleLinkChanged)]
        assert links[-2:] == [False, True]
        assert (await locks.unlock(ADDRESS, 1.0)).locked is False

    run(body)


def test_wrong_key_answers_are_refused_counted_and_open_nothing() -> None:
    async def body(locks: BleLocks, lock: SimNukiLock, events: list[BleEvent]) -> None:
        await until(lambda: locks.snapshot()[0].online is True)
        lock.wrong_key = True
        with pytest.raises(BadMessage):
            await locks.unlock(ADDRESS, 1.0)
        assert locks.failures["bad message: decryption failed"] >= 1
        assert lock.actions == []  # the lock answered the challenge; no action was sent

    run(body)


def test_unpaired_lock_is_never_driven() -> None:
    async def main() -> None:
        radio = VirtualRadio()
        lock = SimNukiLock(radio, ADDRESS)
        await lock.start()
        locks = BleLocks(
            BleManager(radio.open_adapter, SETTINGS),
            {"nuki": NukiFamily()},
            [BleLockSpec(ADDRESS, "nuki", None)],
            lambda e: None,
        )
        await locks.start()
        try:
            with pytest.raises(NotPaired):
                await locks.unlock(ADDRESS, 1.0)
        finally:
            await locks.stop()
        assert lock.actions == []

    asyncio.run(main())

"""Helpers for the OSDP tests: a simulated bus plus the driver, and event waiting."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from drivers.osdp import LockEvent, LockSpec, LockState, OsdpBus
from firmware_sim.locks import SimBus
from firmware_sim.polling import wait_until

KEY = bytes(range(16))


class Recorder:
    """Collects the driver's events (called from the driver thread)."""

    def __init__(self) -> None:
        self._events: list[LockEvent] = []
        self._mutex = threading.Lock()

    def __call__(self, event: LockEvent) -> None:
        with self._mutex:
            self._events.append(event)

    @property
    def events(self) -> list[LockEvent]:
        with self._mutex:
            return list(self._events)

    def of(self, kind: type, address: int | None = None) -> list:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and (address is None or getattr(e, "address", None) == address)
        ]

    def wait_for(
        self, match: Callable[[LockEvent], bool], timeout: float = 15.0
    ) -> LockEvent | None:
        found: list[LockEvent] = []

        def check() -> bool:
            found[:] = [e for e in self.events if match(e)]
            return bool(found)

        wait_until(check, timeout)
        return found[0] if found else None


@contextmanager
def sim_and_bus(
    tmp_path: Path,
    addresses: list[int],
    *,
    sim_keys: dict[int, bytes | None] | None = None,
    driver_keys: dict[int, bytes] | None = None,
    held_open_after_s: float = 30.0,
    wait_online: bool = True,
) -> Iterator[tuple[SimBus, OsdpBus, Recorder]]:
    """A simulated bus with locks at ``addresses`` and a driver on it, both running."""
    link = tmp_path / "ttyOSDP0"
    sim = SimBus(link, baudrate=115200)
    sim_keys = sim_keys or {}
    driver_keys = driver_keys or {}
    for a in addresses:
        key = sim_keys.get(a, KEY)
        sim.add_lock(a, key, install_mode=key is None)
    sim.start()
    recorder = Recorder()
    bus = OsdpBus(
        str(link),
        115200,
        [LockSpec(a, driver_keys.get(a, KEY)) for a in addresses],
        recorder,
        held_open_after_s=held_open_after_s,
    )
    bus.start()
    try:
        if wait_online:
            expected = {a for a in addresses if sim_keys.get(a, KEY) == driver_keys.get(a, KEY)}
            ok = wait_until(
                lambda: {s.address for s in bus.snapshot() if s.online} >= expected, 30.0
            )
            assert ok, f"locks not online: {[s for s in bus.snapshot() if not s.online]}"
        yield sim, bus, recorder
    finally:
        bus.stop()
        sim.stop()


def state_of(bus: OsdpBus, address: int) -> LockState:
    return next(s for s in bus.snapshot() if s.address == address)

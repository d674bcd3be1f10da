"""No false lock_offline when the bus thread itself is late (CPU starvation, a stalled process).

Real libosdp peers on a pseudo-terminal stay powered and answering throughout;
only the driver's own thread is held back. A lock is offline when it is silent
while polled, not when nobody polled it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from drivers.osdp import LockSpec, LockStatusChanged, OsdpBus
from firmware_sim.polling import wait_until
from tests.support.osdp import KEY, Recorder, sim_and_bus, state_of


def offline_events(rec: object, address: int | None = None) -> list[LockStatusChanged]:
    return [
        e
        for e in rec.of(LockStatusChanged, address)  # type: ignore[attr-defined]
        if not e.online
    ]


def test_a_stalled_bus_thread_is_not_a_silent_lock(tmp_path: Path) -> None:
    with sim_and_bus(tmp_path, [1, 2, 3]) as (sim, bus, rec):
        for _ in range(3):
            # The driver thread cannot run for 3 s (longer than offline_after_s = 2 s),
            # as when the process is starved or stopped; the locks keep answering.
            with bus._ctx_lock:
                time.sleep(3.0)
            time.sleep(1.0)
            assert all(state_of(bus, a).online for a in (1, 2, 3))
        assert offline_events(rec) == [], offline_events(rec)
        assert bus.stats.late_s >= 8.0  # the lateness was seen and set aside
        # A lock that really goes silent is still reported, within the usual time.
        sim.locks[2].set_slow(0.5)
        assert wait_until(lambda: not state_of(bus, 2).online, 10)
        assert 2 in [e.address for e in offline_events(rec)]


def test_a_late_reply_is_a_hiccup_not_an_offline(tmp_path: Path) -> None:
    # A reply after OSDP's 200 ms window fails the exchange (and lands in the next
    # lock's), and libosdp drops the session. Back within offline_after_s, the lock was
    # never offline for the building: no event, no alert, a hiccup counted.
    with sim_and_bus(tmp_path, [1, 2, 3]) as (sim, bus, rec):
        for _ in range(3):
            sim.locks[2].set_slow(0.3)
            time.sleep(0.35)
            sim.locks[2].set_slow(0.0)
            # An unlock asked during the hiccup waits for the session to come back.
            bus.unlock(2, 0.5)
            assert sim.locks[2].wait_relay(True, 5)
            time.sleep(3.0)
        assert offline_events(rec) == [], offline_events(rec)
        assert bus.stats.hiccups >= 1
        assert all(state_of(bus, a).online and state_of(bus, a).sc_active for a in (1, 2, 3))


_SIM = """
import sys
from pathlib import Path
from firmware_sim.locks import SimBus
sim = SimBus(Path(sys.argv[1]))
for a in (1, 2, 3, 4):
    sim.add_lock(a, bytes(range(16)))
sim.start()
print("up", flush=True)
sys.stdin.read()
sim.stop()
"""


def test_cpu_starvation_by_busy_threads_raises_no_false_offline(tmp_path: Path) -> None:
    # The locks run in their own process (powered, answering in time); only the
    # gateway's process is starved, by threads that hold the interpreter.
    link = tmp_path / "ttyOSDP0"
    locks = subprocess.Popen(
        [sys.executable, "-c", _SIM, str(link)],
        cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert locks.stdout is not None and locks.stdout.readline().strip() == "up"
    rec = Recorder()
    bus = OsdpBus(str(link), 115200, [LockSpec(a, KEY) for a in (1, 2, 3, 4)], rec)
    bus.start()
    stop = threading.Event()
    burners = []
    try:
        assert wait_until(lambda: all(s.online for s in bus.snapshot()), 30)

        def burn() -> None:
            while not stop.is_set():
                sum(i * i for i in range(20_000))

        burners = [threading.Thread(target=burn, daemon=True) for _ in range(6)]
        for t in burners:
            t.start()
        time.sleep(10.0)
        assert offline_events(rec) == []
        assert all(state_of(bus, a).online for a in (1, 2, 3, 4))
    finally:
        stop.set()
        for t in burners:
            t.join(5)
        bus.stop()
        locks.communicate("", timeout=10)

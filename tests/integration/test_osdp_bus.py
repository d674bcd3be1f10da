"""The OSDP driver against simulated libosdp locks on a pseudo-terminal bus."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from drivers.osdp import (
    BusStatus,
    CardPresented,
    DoorState,
    DoorStateChanged,
    KeyMismatch,
    KeypadEntry,
    LockOffline,
    LockStatusChanged,
    UnknownLock,
    alerts_for,
)
from firmware_sim.polling import wait_until
from tests.support.osdp import KEY, sim_and_bus, state_of

ADDRESSES_16 = list(range(1, 17))


def test_sixteen_locks_unlock_relock_door_states_forced_and_power_loss(tmp_path: Path) -> None:
    with sim_and_bus(tmp_path, ADDRESSES_16) as (sim, bus, rec):
        assert all(s.sc_active for s in bus.snapshot()), "secure channel on every lock"

        # Every lock unlocks on command and relocks after its own time.
        for a in ADDRESSES_16:
            bus.unlock(a, 1.0 + (a % 3) * 0.5)
        for a in ADDRESSES_16:
            lock = sim.locks[a]
            assert wait_until(lambda lock=lock: len(lock.record.relay_changes) >= 2, 15)
            on, off = lock.record.relay_changes[:2]
            assert on.unlocked and not off.unlocked
            assert off.at - on.at == pytest.approx(1.0 + (a % 3) * 0.5, abs=0.25)

        # Contact changes arrive as door states: open during an unlock, closed after.
        bus.unlock(5, 5.0)
        assert sim.locks[5].wait_relay(True, 5)
        sim.locks[5].open_door()
        assert rec.wait_for(
            lambda e: isinstance(e, DoorStateChanged) and e.address == 5 and e.state == "open"
        )
        sim.locks[5].close_door()
        assert rec.wait_for(
            lambda e: (
                isinstance(e, DoorStateChanged)
                and e.address == 5
                and e.state == "closed"
                and e.previous == "open"
            )
        )

        # A door opened without an unlock is forced and raises the alert.
        sim.locks[9].open_door()
        forced = rec.wait_for(
            lambda e: isinstance(e, DoorStateChanged) and e.address == 9 and e.state == "forced"
        )
        assert forced is not None and alerts_for(forced) == ("alert.door_forced",)
        assert state_of(bus, 9).door_state is DoorState.FORCED
        sim.locks[9].close_door()

        # Power loss: offline event with its alert, then back online by itself.
        sim.locks[12].power_off()
        offline = rec.wait_for(
            lambda e: isinstance(e, LockStatusChanged) and e.address == 12 and not e.online
        )
        assert offline is not None and "alert.lock_offline" in alerts_for(offline)
        with pytest.raises(LockOffline):
            bus.unlock(12, 1.0)
        sim.locks[12].power_on()
        assert rec.wait_for(
            lambda e: (
                isinstance(e, LockStatusChanged)
                and e.address == 12
                and e.online
                and e.was_online is False
            )
        )
        assert state_of(bus, 12).sc_active
        bus.unlock(12, 1.0)
        assert sim.locks[12].wait_relay(True, 5)
        # Nobody else went offline meanwhile.
        assert all(s.online for s in bus.snapshot())


def test_wrong_key_is_reported_and_never_used_in_plain_mode(tmp_path: Path) -> None:
    wrong = bytes(16)
    with sim_and_bus(tmp_path, [1, 2], sim_keys={2: wrong}) as (sim, bus, rec):
        assert rec.wait_for(lambda e: isinstance(e, KeyMismatch) and e.address == 2)
        st = state_of(bus, 2)
        assert not st.online and not st.sc_active and st.key_mismatch
        assert state_of(bus, 1).sc_active
        with pytest.raises(LockOffline):
            bus.unlock(2, 1.0)
        time.sleep(1.0)
        # The lock never got a command: no plain-mode session was opened.
        assert sim.locks[2].record.commands == []
        assert not sim.locks[2].sc_active and sim.locks[2].record.relay_changes == []
        assert bus.stats.key_mismatches >= 1


def test_line_noise_never_unlocks_and_never_kills_the_driver(tmp_path: Path) -> None:
    with sim_and_bus(tmp_path, [1, 2, 3]) as (sim, bus, _rec):
        sim.set_noise(0.02, seed=7)
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            sim.inject_noise(64, to_driver=True)
            sim.inject_noise(64, to_driver=False)
            time.sleep(0.03)
        sim.set_noise(0.0)
        assert bus.running
        assert all(lock.record.relay_changes == [] for lock in sim.locks.values())
        assert bus.stats.bad_frames + bus.stats.junk_bytes > 0  # counted, not acted on
        assert wait_until(lambda: all(s.online for s in bus.snapshot()), 30)
        bus.unlock(2, 0.5)
        assert sim.locks[2].wait_relay(True, 5)


def test_port_vanishing_and_coming_back_recovers_within_5s(tmp_path: Path) -> None:
    with sim_and_bus(tmp_path, [1, 2, 3, 4]) as (sim, bus, rec):
        sim.unplug()
        assert rec.wait_for(lambda e: isinstance(e, BusStatus) and not e.port_ok, 5)
        assert wait_until(lambda: not any(s.online for s in bus.snapshot()), 10)
        sim.replug()
        replugged = time.monotonic()
        assert wait_until(lambda: all(s.online for s in bus.snapshot()), 5.0), (
            f"not recovered 5 s after replug: {bus.snapshot()}"
        )
        assert time.monotonic() - replugged <= 5.0
        assert rec.of(BusStatus)[-1].port_ok
        assert bus.stats.port_losses == 1 and bus.stats.port_reopens == 1
        bus.unlock(3, 0.5)
        assert sim.locks[3].wait_relay(True, 5)


def test_tamper_keypad_card_and_bad_keypad_input(tmp_path: Path) -> None:
    with sim_and_bus(tmp_path, [4]) as (sim, bus, rec):
        sim.locks[4].set_tamper(True)
        tamper = rec.wait_for(lambda e: isinstance(e, LockStatusChanged) and e.tamper)
        assert tamper is not None and alerts_for(tamper) == ("alert.tamper",)
        assert state_of(bus, 4).tamper

        sim.locks[4].press_keys("2468#")
        entry = rec.wait_for(lambda e: isinstance(e, KeypadEntry))
        assert isinstance(entry, KeypadEntry) and entry.digits == "2468#"
        assert "2468" not in repr(entry)  # a PIN stays out of logs

        sim.locks[4].present_card(b"\x12\x34\x56\x40", bits=26)
        card = rec.wait_for(lambda e: isinstance(e, CardPresented))
        assert isinstance(card, CardPresented)
        assert card.data == b"\x12\x34\x56\x40" and card.bits == 26

        before = bus.stats.bad_events
        sim.locks[4].press_keys("12\x07")
        assert wait_until(lambda: bus.stats.bad_events > before, 5)
        assert len(rec.of(KeypadEntry)) == 1


def test_feedback_reaches_the_led_and_buzzer(tmp_path: Path) -> None:
    with sim_and_bus(tmp_path, [6]) as (sim, bus, _rec):
        bus.feedback(6, granted=False)
        lock = sim.locks[6]
        assert wait_until(lambda: lock.record.led is not None and lock.record.buzzer is not None)
        assert lock.record.led is not None and lock.record.led["on_color"] == 1  # red
        bus.feedback(6, granted=True)
        assert wait_until(lambda: lock.record.led is not None and lock.record.led["on_color"] == 2)
        assert lock.record.relay_changes == []  # feedback never opens the door


def test_commands_refuse_unknown_locks_and_bad_times(tmp_path: Path) -> None:
    with sim_and_bus(tmp_path, [1]) as (_sim, bus, _rec):
        with pytest.raises(UnknownLock):
            bus.unlock(99, 1.0)
        with pytest.raises(ValueError, match="unlock time"):
            bus.unlock(1, 60.0)


def test_config_errors_are_clear() -> None:
    from drivers.osdp import LockSpec, OsdpBus

    with pytest.raises(ValueError, match="keyset"):
        OsdpBus("/dev/null", 115200, [LockSpec(1, None)], print)
    with pytest.raises(ValueError, match="twice"):
        OsdpBus("/dev/null", 115200, [LockSpec(1, KEY), LockSpec(1, KEY)], print)
    with pytest.raises(ValueError, match="at most 64"):
        OsdpBus("/dev/null", 115200, [LockSpec(a, KEY) for a in range(65)], print)


def test_sixty_four_locks_all_online_and_the_last_one_unlocks(tmp_path: Path) -> None:
    addresses = list(range(1, 65))
    with sim_and_bus(tmp_path, addresses) as (sim, bus, _rec):
        assert all(s.online and s.sc_active for s in bus.snapshot())
        bus.unlock(64, 0.5)
        assert sim.locks[64].wait_relay(True, 5)
        assert sim.locks[63].record.relay_changes == []


def test_slow_lock_still_works_and_a_mute_one_goes_offline(tmp_path: Path) -> None:
    with sim_and_bus(tmp_path, [1, 2]) as (sim, bus, rec):
        sim.locks[1].set_slow(0.05)  # well inside OSDP's 200 ms reply window
        time.sleep(0.5)
        bus.unlock(1, 0.5)
        assert sim.locks[1].wait_relay(True, 5)
        assert state_of(bus, 1).online
        sim.locks[2].set_slow(0.5)  # too slow: every reply misses its window
        assert rec.wait_for(
            lambda e: isinstance(e, LockStatusChanged) and e.address == 2 and not e.online
        )
        sim.locks[2].set_slow(0.0)
        assert wait_until(lambda: state_of(bus, 2).online, 20)


def test_per_lock_held_open_time(tmp_path: Path) -> None:
    from drivers.osdp import LockSpec, OsdpBus
    from firmware_sim.locks import SimBus
    from tests.support.osdp import Recorder

    sim = SimBus(tmp_path / "tty")
    sim.add_lock(1, KEY)
    sim.start()
    rec = Recorder()
    bus = OsdpBus(str(sim.link), 115200, [LockSpec(1, KEY, held_open_after_s=0.5)], rec, 300.0)
    bus.start()
    try:
        assert wait_until(lambda: state_of(bus, 1).online)
        bus.unlock(1, 2.0)
        assert sim.locks[1].wait_relay(True, 5)
        sim.locks[1].open_door()
        assert rec.wait_for(lambda e: isinstance(e, DoorStateChanged) and e.state == "held_open")
    finally:
        bus.stop()
        sim.stop()

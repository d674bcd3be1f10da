"""Trusted time runs on the monotonic clock; the wall clock and platform ts correct it, bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.state.clock import DEFAULT_DRIFT_S, DEFAULT_MAX_SKEW_S, SLEW_PPM, ClockGuard
from agent.state.store import Store
from tests.support.clocks import SettableClocks

T0 = 1_800_000_000.0
HOUR = 3600.0
DAY = 86_400.0


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Store.open(tmp_path / "db")
    yield s
    s.close()


def _guard(store: Store, clocks: SettableClocks, grace: float | None = 72 * HOUR) -> ClockGuard:
    return ClockGuard(store, max_ahead_s=grace, sources=clocks)


def _incidents(store: Store) -> list[str]:
    with store.read() as conn:
        return [r[0] for r in conn.execute("SELECT kind FROM incidents")]


def test_a_wall_clock_set_back_does_not_stop_time(store: Store) -> None:
    clocks = SettableClocks(wall=T0)
    guard = _guard(store, clocks)
    assert guard.observe_trusted(T0)
    clocks.wall_now -= 6 * HOUR  # the attacker sets the clock back, the network is cut
    clocks.elapse(2 * HOUR)
    assert guard.now() == pytest.approx(T0 + 2 * HOUR)  # not frozen at T0
    assert "clock_backwards" in _incidents(store)
    assert guard.state().mode == "wall_behind"
    assert guard.state().uptime_s == pytest.approx(2 * HOUR)  # never negative


def test_a_wall_clock_jumped_ahead_is_believed_only_up_to_the_drift(store: Store) -> None:
    clocks = SettableClocks(wall=T0)
    guard = _guard(store, clocks)
    assert guard.observe_trusted(T0)
    clocks.wall_now += HOUR  # within the offline grace: the old cap let this through
    assert guard.now() <= T0 + DEFAULT_DRIFT_S + 1
    assert guard.state().mode == "wall_ahead"
    assert "clock_ahead" in _incidents(store)
    clocks.wall_now -= HOUR  # fixed: nothing is left ahead to recover from
    clocks.elapse(60)
    trusted = guard.now()
    assert T0 + 60 <= trusted <= T0 + 60 + DEFAULT_DRIFT_S + 1
    assert guard.state().mode == "ok"
    # a genuine platform command stamped now is accepted (not "in the past")
    assert guard.observe_trusted(T0 + 60)


def test_a_platform_ts_far_ahead_is_refused_and_moves_nothing(store: Store) -> None:
    clocks = SettableClocks(wall=T0)
    guard = _guard(store, clocks)
    assert guard.observe_trusted(T0)
    contact = guard.last_contact()
    assert not guard.observe_trusted(T0 + 30 * DAY)
    assert guard.now() == pytest.approx(T0)
    assert guard.last_contact() == contact
    assert guard.counters["skew_rejected"] == 1
    # within the allowed skew it moves time forward
    assert guard.observe_trusted(T0 + DEFAULT_MAX_SKEW_S - 1)
    assert guard.now() == pytest.approx(T0 + DEFAULT_MAX_SKEW_S - 1)


def test_a_gateway_behind_recovers_when_the_platform_confirms_the_wall_clock(
    store: Store,
) -> None:
    clocks = SettableClocks(wall=T0)
    guard = _guard(store, clocks)
    assert guard.observe_trusted(T0)
    clocks.power_cycle(off_s=10 * HOUR)
    clocks.wall_now = T0 - 5 * DAY  # dead RTC: the wall clock says last week
    guard = _guard(store, clocks)
    assert guard.now() == pytest.approx(T0)  # resumed from the anchor, never below it
    real = T0 + 10 * HOUR
    assert not guard.observe_trusted(real)  # the wall clock disagrees: refused for now
    assert guard.counters["skew_rejected"] == 1
    clocks.wall_now = real  # NTP fixes the wall clock
    assert guard.observe_trusted(real)  # the platform agrees with it: caught up
    assert guard.now() == pytest.approx(real)
    assert guard.state().mode == "ok"


def test_a_power_cycle_resumes_from_the_anchor_and_the_wall_clock_bounded(
    store: Store,
) -> None:
    clocks = SettableClocks(wall=T0)
    guard = _guard(store, clocks, grace=72 * HOUR)
    assert guard.observe_trusted(T0)
    clocks.elapse(HOUR)
    guard.flush()
    clocks.power_cycle(off_s=5 * HOUR)
    guard = _guard(store, clocks, grace=72 * HOUR)
    assert guard.now() == pytest.approx(T0 + 6 * HOUR)  # the wall clock counted the outage
    assert guard.state().mode == "restarted"
    assert guard.observe_trusted(T0 + 6 * HOUR)
    assert guard.state().mode == "ok"
    clocks.power_cycle(off_s=0)
    clocks.wall_now += 365 * DAY  # a year ahead: bounded by the grace past the platform's ts
    guard = _guard(store, clocks, grace=72 * HOUR)
    assert guard.now() == pytest.approx(T0 + 6 * HOUR + 72 * HOUR)


def test_a_restart_without_a_power_cycle_keeps_monotonic_continuity(store: Store) -> None:
    clocks = SettableClocks(wall=T0)
    guard = _guard(store, clocks)
    assert guard.observe_trusted(T0)
    guard.flush()
    clocks.wall_now -= DAY  # set back while the daemon was stopped
    clocks.elapse(600)
    guard = _guard(store, clocks)
    assert guard.now() == pytest.approx(T0 + 600)
    assert guard.state().mode == "wall_behind"


@settings(max_examples=300, deadline=None)
# Seen: after a power cycle the platform's first ts, behind where time resumed, must rein
# trusted time in; a ts a little behind the carried platform point must restart the slew.
@example(steps=[("wall", 31.0), ("power", 0.0), ("platform", 0.0), ("elapse", 1.0)])
@example(steps=[("elapse", 2_616_121.0), ("wall", 83.0), ("platform", 0.0), ("elapse", 1.0)])
@example(steps=[("elapse", 10.0), ("late", 600.0), ("elapse", 100.0)])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["elapse", "wall", "platform", "late", "restart", "power"]),
            st.floats(-40 * DAY, 40 * DAY),
        ),
        max_size=25,
    )
)
def test_trusted_time_never_goes_back_and_never_runs_ahead_unconfirmed(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, float]]
) -> None:
    store = Store.open(tmp_path_factory.mktemp("clk") / "db")
    clocks = SettableClocks(wall=T0)
    real = T0  # the true time, which the platform's ts always says
    guard = _guard(store, clocks)
    assert guard.observe_trusted(real)
    last = guard.now()
    rebooted = powered = False
    heard = bound = real
    for action, amount in steps:
        if action == "elapse":
            clocks.elapse(abs(amount) / 10)
            real += abs(amount) / 10
        elif action == "wall":
            clocks.wall_now += amount
        elif action == "platform":
            if guard.observe_trusted(real):
                rebooted, heard, bound = False, real, max(bound, guard.now())
        elif action == "late":
            # A command that waited at the broker: its ts is up to 15 minutes old. It may
            # renew the platform's point, but it must not hold time back.
            guard.observe_trusted(real - abs(amount) % 900)
        elif action == "restart":
            guard.flush()
            guard = _guard(store, clocks)
        else:
            guard.flush()
            off = abs(amount) / 10
            clocks.power_cycle(off)
            real += off
            guard = _guard(store, clocks)
            rebooted = powered = True
        now = guard.now()
        assert now >= last
        last = now
        if not rebooted:
            # Without a power cycle, a set wall clock never puts trusted time more than
            # the drift ahead of the truth.
            # (an excess already reached pauses until real time catches up)
            slew = (real - heard) * SLEW_PPM * 1e-6
            bound = max(bound, real + DEFAULT_DRIFT_S + slew + 1e-3)
            assert now <= bound
        if not powered:
            # With monotonic continuity, no wall clock and no late ts holds time back.
            assert now >= real - 1e-3
    store.close()


def test_a_reading_inside_a_write_transaction_defers_its_writes(store: Store) -> None:
    clocks = SettableClocks(wall=T0)
    guard = _guard(store, clocks)
    assert guard.observe_trusted(T0)
    with store.write():  # the outbox stamps envelopes inside its transaction
        clocks.elapse(120)  # a persist is due
        clocks.wall_now -= DAY  # and an incident
        assert guard.now() == pytest.approx(T0 + 120)
    assert _incidents(store) == []
    guard.now()  # the next reading outside does both
    assert _incidents(store) == ["clock_backwards"]
    with store.read() as conn:
        mark = conn.execute("SELECT value FROM meta WHERE key = 'clock_high_water'").fetchone()
    assert float(mark[0]) == pytest.approx(T0 + 120)

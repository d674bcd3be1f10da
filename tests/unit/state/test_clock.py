"""Trusted time: never back, kept across restarts, not run away with by a clock far ahead."""

from __future__ import annotations

from pathlib import Path

from agent.state.clock import ClockGuard
from agent.state.store import Store

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _incidents(store: Store) -> list[str]:
    with store.read() as conn:
        return [r[0] for r in conn.execute("SELECT kind FROM incidents")]


def test_a_clock_set_back_never_lowers_trusted_time_even_after_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "db")
    guard = ClockGuard(store, clock)
    clock.now = T0 + 3600
    assert guard.now() == T0 + 3600
    guard.flush()
    clock.now = T0 - 86400
    assert guard.now() == T0 + 3600
    assert "clock_backwards" in _incidents(store)
    store.close()
    store = Store.open(tmp_path / "db")
    assert ClockGuard(store, clock).now() == T0 + 3600
    store.close()


def test_platform_time_raises_the_mark_and_counts_as_contact(tmp_path: Path) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "db")
    guard = ClockGuard(store, clock)
    assert guard.last_contact() is None
    guard.observe_trusted(T0 + 600)  # the platform's clock is ahead of ours
    assert guard.now() == T0 + 600
    assert guard.last_contact() == T0 + 600
    assert guard.state().behind_s == 600
    store.close()


def test_a_system_clock_far_ahead_counts_only_up_to_the_grace(tmp_path: Path) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "db")
    guard = ClockGuard(store, clock, max_ahead_s=3600)
    guard.observe_trusted(T0)
    clock.now = T0 + 365 * 86400  # the RTC jumped a year ahead
    assert guard.now() == T0 + 3600
    assert "clock_ahead" in _incidents(store)
    assert guard.state().ahead_s > 364 * 86400
    clock.now = T0 + 120  # corrected: trusted time was not pushed a year ahead
    guard.observe_trusted(T0 + 120)
    assert guard.now() == T0 + 3600
    store.close()

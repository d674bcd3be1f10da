"""The door state machine: contact + commanded unlock window + time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.osdp import DoorState, DoorStateMachine


def connected(held: float = 30.0) -> DoorStateMachine:
    door = DoorStateMachine(held)
    assert door.contact(0.0, False) is DoorState.CLOSED  # baseline report
    return door


def test_open_during_unlock_is_open_then_closed() -> None:
    door = connected()
    door.unlocked(10.0, 5.0)
    assert door.contact(11.0, True) is DoorState.OPEN
    assert door.contact(14.0, False) is DoorState.CLOSED


def test_open_without_unlock_is_forced_and_stays_forced_until_closed() -> None:
    door = connected(held=2.0)
    assert door.contact(5.0, True) is DoorState.FORCED
    assert door.tick(60.0) is None  # not downgraded to held_open
    assert door.state is DoorState.FORCED
    assert door.contact(61.0, False) is DoorState.CLOSED


def test_open_after_unlock_window_expired_is_forced() -> None:
    door = connected()
    door.unlocked(10.0, 3.0)
    door.tick(13.5)
    assert door.contact(13.6, True) is DoorState.FORCED


def test_relocked_ends_the_window() -> None:
    door = connected()
    door.unlocked(10.0, 5.0)
    door.relocked()
    assert door.contact(11.0, True) is DoorState.FORCED


def test_held_open_after_the_configured_time() -> None:
    door = connected(held=20.0)
    door.unlocked(0.0, 5.0)
    assert door.contact(1.0, True) is DoorState.OPEN
    assert door.tick(20.9) is None
    assert door.tick(21.0) is DoorState.HELD_OPEN
    assert door.tick(30.0) is None  # reported once
    assert door.contact(31.0, False) is DoorState.CLOSED


def test_repeated_reports_do_not_repeat_events() -> None:
    door = connected()
    assert door.contact(1.0, False) is None
    door.unlocked(1.0, 5.0)
    assert door.contact(2.0, True) is DoorState.OPEN
    assert door.contact(2.5, True) is None


def test_first_report_after_reconnect_is_a_baseline_not_forced() -> None:
    door = connected()
    door.reset()  # the lock went offline; the door may have moved meanwhile
    assert door.contact(100.0, True) is DoorState.OPEN
    door.contact(101.0, False)
    assert door.contact(102.0, True) is DoorState.FORCED  # no longer a baseline


def test_missing_baseline_means_closed() -> None:
    door = DoorStateMachine(30.0)
    assert door.state is DoorState.UNKNOWN
    assert door.baseline_missing() is DoorState.CLOSED
    assert door.contact(5.0, True) is DoorState.FORCED


def test_longer_unlock_extends_shorter_does_not_shorten() -> None:
    door = connected()
    door.unlocked(0.0, 10.0)
    door.unlocked(1.0, 2.0)
    assert door.is_unlocked(9.0)
    assert not door.is_unlocked(10.0)


def test_rejects_nonsense_held_open_time() -> None:
    with pytest.raises(ValueError, match="held_open_after_s"):
        DoorStateMachine(0)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["unlock", "relock", "open", "close", "tick"]),
            st.floats(min_value=0.0, max_value=5.0),
        ),
        max_size=40,
    )
)
def test_forced_exactly_when_opened_outside_a_commanded_unlock(
    steps: list[tuple[str, float]],
) -> None:
    door = connected(held=3.0)
    now = 0.0
    unlocked_until = -1.0
    is_open = False
    for action, dt in steps:
        now += dt
        if action == "unlock":
            door.unlocked(now, 2.0)
            unlocked_until = max(unlocked_until, now + 2.0)
        elif action == "relock":
            door.relocked()
            unlocked_until = -1.0
        elif action == "open":
            new = door.contact(now, True)
            if not is_open:
                expected = DoorState.OPEN if now < unlocked_until else DoorState.FORCED
                assert new is expected
            is_open = True
        elif action == "close":
            door.contact(now, False)
            is_open = False
            assert door.state is DoorState.CLOSED
        else:
            door.tick(now)
            if now >= unlocked_until:
                unlocked_until = -1.0

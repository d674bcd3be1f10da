"""The clock attacks of issue 13 against the real door flow: nothing opens that should not,
records carry the right time, and the gateway recovers by itself when the clock is fixed."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from agent.state.clock import DEFAULT_DRIFT_S
from tests.integration.test_card_in_use import _card
from tests.integration.test_door_statemachine import DoorMachine

HOUR = 3600.0


@pytest.fixture
def building() -> Iterator[DoorMachine]:
    machine = DoorMachine()
    machine._first_contact()
    yield machine
    machine.teardown()


def _present(machine: DoorMachine, lock: str = "L1") -> Any:
    return asyncio.run(machine.flow.present_card(lock, _card(0)))


def _last_at(machine: DoorMachine) -> float:
    at = machine.journal.since(0, 1000)[-1]["at"]
    return dt.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def test_a_clock_set_back_while_offline_does_not_extend_a_grant(building: DoorMachine) -> None:
    building.put_grant({0}, {"L1"}, starts_in_h=0, lasts_h=1, slot=0)
    assert _present(building).granted
    building.wall_clock_set(hours=-6)  # the network is cut, the clock set back
    building.time_passes(hours=2)  # the grant ended an hour ago
    refused = _present(building)
    assert (refused.granted, refused.reason) == (False, "grant_expired")
    assert _last_at(building) == pytest.approx(building.real, abs=1)  # not the frozen time
    assert building.guard.state().mode == "wall_behind"


def test_a_clock_set_forward_lets_nobody_in_early_and_the_gateway_recovers(
    building: DoorMachine,
) -> None:
    building.put_grant({0}, {"L1"}, starts_in_h=1, lasts_h=5, slot=0)
    building.wall_clock_set(hours=1)  # within the offline grace: the old cap let it through
    early = _present(building)
    assert (early.granted, early.reason) == (False, "grant_not_yet_valid")
    assert building.guard.state().mode == "wall_ahead"
    building.wall_clock_set(hours=-1)  # the clock is fixed
    building.time_passes(hours=1)
    assert _present(building).granted  # the current grant is honoured, not "expired"
    # at most the drift the wall clock was believed by while it was ahead
    assert building.real <= _last_at(building) <= building.real + DEFAULT_DRIFT_S + 1
    building._send("ping", {})  # the platform's commands are not "expired" on arrival
    assert building.guard.state().mode == "ok"

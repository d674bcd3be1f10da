"""One person, one door: the same card at a second door while its visit is in progress, or
soon after it opened the first door, is refused ``card_in_use`` with an alert."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.door.decision import SitePolicy
from drivers.idcard.codec import CardData
from drivers.idcard.reader import card_read_from
from firmware_sim.idcards import sample_card
from tests.integration.test_door_statemachine import PEOPLE, DoorMachine


@pytest.fixture
def building() -> Iterator[DoorMachine]:
    machine = DoorMachine()
    machine._first_contact()
    machine.put_grant({0}, {"L1", "L2"}, starts_in_h=-2, lasts_h=48, slot=0)
    yield machine
    machine.teardown()


def _card(person: int) -> Any:
    name, number = PEOPLE[person]
    card = sample_card(
        name=name, id_number=number, birth=number[6:14], sex="1" if int(number[16]) % 2 else "2"
    )
    return card_read_from(CardData(card.text_block(), card.photo), None, 1.0)


def _alerts(machine: DoorMachine) -> list[dict[str, Any]]:
    return [e for e in machine.journal.since(0, 1000) if e["type"] == "alert.card_in_use"]


def test_the_same_card_at_two_doors_at_once_opens_one(building: DoorMachine) -> None:
    face = building.face
    slow_verify = face.verify

    def verify(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)  # the first door's face check is still running
        return slow_verify(*args, **kwargs)

    face.verify = verify  # type: ignore[method-assign]

    async def both() -> list[Any]:
        first = asyncio.ensure_future(building.flow.present_card("L1", _card(0)))
        await asyncio.sleep(0.05)
        second = await building.flow.present_card("L2", _card(0))
        return [await first, second]

    first, second = asyncio.run(both())
    assert first.granted and (second.granted, second.reason) == (False, "card_in_use")
    assert building.bus is not None and building.bus.unlocks == 1
    [alert] = _alerts(building)
    assert alert["lock"] == "L2"
    checkins = [e for e in building.journal.since(0, 1000) if e["type"] == "checkin.verified"]
    assert len(checkins) == 1


def test_a_second_door_within_the_window_is_refused_and_after_it_is_fine(
    building: DoorMachine,
) -> None:
    assert asyncio.run(building.flow.present_card("L1", _card(0))).granted
    refused = asyncio.run(building.flow.present_card("L2", _card(0)))
    assert (refused.granted, refused.reason) == (False, "card_in_use")
    assert asyncio.run(building.flow.present_card("L1", _card(0))).granted  # same door: fine
    window = SitePolicy().card_reuse_window_s
    building.time_passes(hours=(window + 1) / 3600)
    assert asyncio.run(building.flow.present_card("L2", _card(0))).granted
    assert len(_alerts(building)) == 1

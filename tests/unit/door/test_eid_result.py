"""What an eid.result says: the identity checked like a card's; results matched to waiting
requests, late ones and unknown ones told apart."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from agent.door.eid import PendingRequests
from agent.door.eidresult import read_result
from drivers.idcard.identity import check_digit

TODAY = dt.date(2026, 12, 2)


def number(birth: str = "19900307", seq: str = "123") -> str:
    first17 = "310104" + birth + seq
    return first17 + check_digit(first17)


def verified(**identity: Any) -> dict[str, Any]:
    person = {
        "name": "张三",
        "sex": "1",
        "nation": "01",
        "birth": "19900307",
        "id_number": number(),
        "address": "上海市徐汇区某路1号",
        "valid_until": "20350101",
    }
    person.update(identity)
    return {"request_id": "r1", "status": "verified", "identity": person}


def test_a_good_identity_is_read() -> None:
    answer = read_result(verified(), TODAY)
    assert answer.verified and answer.identity is not None
    assert answer.identity.id_number == number()
    assert answer.identity.birth == dt.date(1990, 3, 7)
    assert "张三" not in repr(answer.identity) and number() not in repr(answer.identity)


def test_a_failed_result_carries_the_platform_error() -> None:
    answer = read_result({"request_id": "r1", "status": "failed", "error": "code_used"}, TODAY)
    assert (answer.verified, answer.error, answer.identity) == (False, "code_used", None)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id_number": number()[:17] + ("0" if number()[17] != "0" else "1")}, "bad_check_digit"),
        ({"birth": "19900308"}, "birth_mismatch"),
        ({"sex": "2"}, "sex_mismatch"),
        ({"birth": "19901307"}, "bad_date"),
        ({"nation": "77"}, "unknown_nation"),
        ({"valid_until": "20251231"}, "expired"),
        ({"name": " "}, "missing_field"),
        (
            {"birth": "20270101", "id_number": number("20270101")},
            "birth_in_future",
        ),
    ],
)
def test_a_bad_identity_is_refused_with_the_reason(change: dict[str, str], reason: str) -> None:
    answer = read_result(verified(**change), TODAY)
    assert not answer.verified and answer.identity is None
    assert answer.error == f"identity_invalid: {reason}"


def test_long_term_validity_is_accepted() -> None:
    assert read_result(verified(valid_until="长期"), TODAY).verified


def test_results_are_matched_once_then_late_or_unknown() -> None:
    async def scenario() -> list[str]:
        requests = PendingRequests(asyncio.get_running_loop())
        waiting = requests.open("a")
        outcomes = [requests.deliver({"request_id": "a", "status": "failed"})]
        body = await asyncio.wait_for(waiting, 1)
        assert body["request_id"] == "a"
        outcomes.append(requests.deliver({"request_id": "a"}))  # a copy after the match
        timed_out = requests.open("b")
        requests.close("b")  # answer_by passed
        assert timed_out.cancelled()
        outcomes.append(requests.deliver({"request_id": "b"}))
        outcomes.append(requests.deliver({"request_id": "never-made"}))
        assert requests.waiting == 0
        return outcomes

    assert asyncio.run(scenario()) == ["matched", "late", "late", "unknown"]


def test_a_result_from_another_thread_reaches_the_loop() -> None:
    import threading

    async def scenario() -> dict[str, Any]:
        requests = PendingRequests(asyncio.get_running_loop())
        waiting = requests.open("t")
        threading.Thread(target=requests.deliver, args=({"request_id": "t", "x": 1},)).start()
        return await asyncio.wait_for(waiting, 2)

    assert asyncio.run(scenario())["x"] == 1

"""The AsyncAPI document's gateway-message schemas are complete, valid and actually checked."""

from __future__ import annotations

import json
import re

import pytest
from jsonschema import Draft202012Validator

from agent.contract.messages import ALERT_TYPES, EVENT_TYPES, make_envelope
from tests.support.contract import SCHEMA_PATH, documented_types, problems

ASYNCAPI = SCHEMA_PATH.parents[1] / "asyncapi.yaml"


def test_schema_file_is_valid_json_schema_and_every_message_is_referenced() -> None:
    doc = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(doc)
    referenced = set(
        re.findall(r"schemas/gateway-messages\.json#/\$defs/([a-z_.]+)'", ASYNCAPI.read_text())
    )
    assert referenced == documented_types()
    # every type the gateway's code knows it sends is documented
    assert EVENT_TYPES | ALERT_TYPES | {"ack"} <= documented_types()


def checkin_body() -> dict[str, object]:
    return {
        "lock": "door-1",
        "room": "101",
        "grant_id": "g-1",
        "guest_id": "p-1",
        "card_type": "resident",
        "name": "测试",
        "sex": "2",
        "nation": "01",
        "birth": "19491231",
        "address": "北京市",
        "id_number": "11010519491231002X",
        "issuer": "北京市公安局",
        "valid_from": "20200101",
        "valid_until": "长期",
        "card_photo_b64": "AAAA",
        "card_photo_format": "wlt",
        "live_jpeg_b64": "/9j/",
        "face_distance": 0.31,
        "face_threshold": 0.5,
        "liveness": {"mode": "blink", "passed": True, "detail": "blink"},
        "at": "2026-12-02T10:00:00.000Z",
    }


def env(msg_type: str, body: dict[str, object]) -> dict[str, object]:
    return make_envelope(msg_type, "bldg-001", body, seq=7)


def test_a_documented_message_passes() -> None:
    assert problems(env("checkin.verified", checkin_body())) == []
    assert problems(env("ack", {"cmd_id": "c", "status": "rejected", "error": "expired: x"})) == []


@pytest.mark.parametrize(
    ("msg_type", "body", "expected"),
    [
        ("checkin.verified", checkin_body() | {"extra": 1}, "'extra' was unexpected"),
        ("checkin.verified", {k: v for k, v in checkin_body().items() if k != "at"}, "'at'"),
        ("ack", {"cmd_id": "c", "status": "rejected"}, "'error' is a required property"),
        ("ack", {"cmd_id": "c", "status": "rejected", "error": "Expired"}, "does not match"),
        ("door.opened", {"lock": "d", "method": ["id_card"], "at": "2026-12-02T10:00:00Z"}, ""),
        ("alert.identity_mismatch", {"lock": "door-1", "at": "2026-12-02T10:00:00Z"}, "grant_id"),
        ("outbox.dropped", {"seqs": [[1, 2]], "count": 2, "types": {}, "at": "x"}, "reason"),
        ("no.such_type", {"at": "2026-12-02T10:00:00Z"}, "type not documented"),
    ],
)
def test_undocumented_or_missing_fields_are_caught(
    msg_type: str, body: dict[str, object], expected: str
) -> None:
    found = problems(env(msg_type, body))
    assert found and expected in " ".join(found)


def test_contract_check_fixture_sees_what_the_outbox_seals(contract_check: object) -> None:
    from agent.sync.outbox import seal  # the fixture's wrapper is in place

    before = contract_check.checked  # type: ignore[attr-defined]
    with pytest.raises(Exception):  # noqa: B017 - keys are not the point: the check runs first
        seal(env("door.state", {"lock": "door-1", "state": "ajar", "at": "x"}), None, None)
    assert contract_check.checked == before + 1  # type: ignore[attr-defined]
    assert any("ajar" in v for v in contract_check.violations)  # type: ignore[attr-defined]
    contract_check.violations.clear()  # type: ignore[attr-defined]

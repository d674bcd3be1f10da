"""Envelope and body schemas: what passes, and errors that name the field but not the value."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from agent.contract.messages import (
    MessageError,
    format_time,
    make_envelope,
    parse_time,
    topic_kind,
    validate_command,
    validate_gateway_message,
)

GW = "bldg-001"
ID_NUMBER = "11010519491231002X"
NOW = dt.datetime.now(dt.UTC)


def grant(grant_id: str = "g-1") -> dict[str, Any]:
    return {
        "grant_id": grant_id,
        "room": "301",
        "locks": ["door-301", "main"],
        "valid_from": format_time(NOW),
        "valid_until": format_time(NOW + dt.timedelta(days=2)),
        "guests": [{"guest_id": "p1", "id_number": ID_NUMBER, "name": "王五"}],
    }


COMMANDS: dict[str, dict[str, Any]] = {
    "grant.put": grant(),
    "grant.revoke": {"grant_id": "g-1", "reason": "checkout"},
    "grant.sync": {"grants": [grant("g-1"), grant("g-2")]},
    "lock.unlock": {"lock": "door-301", "seconds": 5, "reason": "remote"},
    "sync.ack": {"through_seq": 17},
    "ping": {},
}


def command(msg_type: str, body: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    env = make_envelope(
        msg_type,
        GW,
        copy.deepcopy(COMMANDS[msg_type] if body is None else body),
        exp=NOW + dt.timedelta(minutes=5),
    )
    env.update(changes)
    return env


@pytest.mark.parametrize("msg_type", sorted(COMMANDS))
def test_every_command_type_validates(msg_type: str) -> None:
    assert validate_command(command(msg_type), GW)["type"] == msg_type


def test_extra_body_fields_are_allowed() -> None:
    validate_command(command("ping", {"note": "extra"}), GW)


@pytest.mark.parametrize(
    ("msg_type", "mutate", "field"),
    [
        ("grant.put", lambda b: b.pop("guests"), "body.guests"),
        ("grant.put", lambda b: b.update(locks=[]), "body.locks"),
        (
            "grant.put",
            lambda b: b["guests"][0].update(id_number="12345"),
            "body.guests.0.id_number",
        ),
        ("grant.put", lambda b: b.update(valid_until=b["valid_from"]), "body.valid_until"),
        ("grant.put", lambda b: b.update(valid_from="tomorrow"), "body.valid_from"),
        ("grant.sync", lambda b: b["grants"].append(grant("g-1")), "body.grants"),
        ("lock.unlock", lambda b: b.update(seconds=0), "body.seconds"),
        ("lock.unlock", lambda b: b.pop("lock"), "body.lock"),
        ("sync.ack", lambda b: b.update(through_seq="17"), "body.through_seq"),
        ("sync.ack", lambda b: b.update(through_seq=-1), "body.through_seq"),
    ],
)
def test_invalid_bodies_name_the_field(msg_type: str, mutate: Any, field: str) -> None:
    body = copy.deepcopy(COMMANDS[msg_type])
    mutate(body)
    with pytest.raises(MessageError) as info:
        validate_command(command(msg_type, body), GW)
    assert info.value.field.startswith(field)
    assert msg_type in str(info.value)


def test_errors_do_not_quote_personal_data() -> None:
    body = copy.deepcopy(COMMANDS["grant.put"])
    body["guests"][0]["id_number"] = "A-" + ID_NUMBER
    body["guests"][0]["name"] = 42
    with pytest.raises(MessageError) as info:
        validate_command(command("grant.put", body), GW)
    assert ID_NUMBER not in str(info.value)
    assert "guests.0.name" in str(info.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"v": 2}, "v"),
        ({"id": "not-a-uuid"}, "id"),
        ({"id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8"}, "id"),  # uuid1
        ({"gw": "other-gw"}, "gw"),
        ({"gw": "NO"}, "gw"),
        ({"ts": "2026-01-01 00:00:00"}, "ts"),
        ({"ts": "2026-01-01T08:00:00+08:00"}, "ts"),
        ({"exp": "soon"}, "exp"),
        ({"seq": 3}, "seq"),
        ({"type": "grant.delete"}, "type"),
        ({"extra": 1}, "extra"),
    ],
)
def test_envelope_errors(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(MessageError) as info:
        validate_command(command("ping", **changes), GW)
    assert info.value.field == field


def test_command_without_exp_is_invalid() -> None:
    env = command("ping")
    del env["exp"]
    with pytest.raises(MessageError, match="without exp"):
        validate_command(env, GW)


def test_gateway_messages() -> None:
    at = format_time(NOW)
    good: list[tuple[str, dict[str, Any]]] = [
        ("ack", {"cmd_id": "x", "status": "rejected", "error": "expired"}),
        ("door.opened", {"lock": "l1", "method": ["card", "face"], "grant_id": "g", "at": at}),
        ("door.state", {"lock": "l1", "state": "held_open", "at": at}),
        ("alert.tamper", {"lock": "l1", "at": at, "evidence": "x"}),
        ("alert.outbox_near_full", {"at": at, "bytes": 10, "max_bytes": 20}),
        ("visitor.custom_event", {"at": at}),
    ]
    for msg_type, body in good:
        validate_gateway_message(make_envelope(msg_type, GW, body, seq=1))
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("door.opened", {"lock": "l1", "method": ["card"], "at": at}, "grant_id"),
        ("door.state", {"lock": "l1", "state": "ajar", "at": at}, "state"),
        ("ack", {"cmd_id": "x", "status": "maybe"}, "status"),
        ("Bad Type", {"at": at}, "type"),
    ]
    for msg_type, body, field in bad:
        with pytest.raises(MessageError) as info:
            validate_gateway_message(make_envelope(msg_type, GW, body, seq=1))
        assert field in info.value.field
    with pytest.raises(MessageError, match="seq"):
        validate_gateway_message(make_envelope("door.opened", GW, good[1][1]))


def test_topics_and_times() -> None:
    assert [topic_kind(t) for t in ("ack", "alert.tamper", "door.opened")] == [
        "ack",
        "alert",
        "evt",
    ]
    parsed = parse_time("2026-03-01T10:00:00.123456789Z")
    assert parsed == dt.datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)
    assert parse_time(format_time(parsed)).microsecond == 123000


def test_asyncapi_documents_every_message_type() -> None:
    from pathlib import Path

    from agent.contract.messages import ALERT_TYPES, COMMAND_TYPES, EVENT_TYPES, REQUEST_TYPES

    text = (Path(__file__).resolve().parents[3] / "docs" / "asyncapi.yaml").read_text()
    assert text.startswith("asyncapi: 3.0.0")
    documented = {
        line.split("name:", 1)[1].strip()
        for line in text.splitlines()
        if line.strip().startswith("name: ")
    }
    missing = (COMMAND_TYPES | EVENT_TYPES | ALERT_TYPES | REQUEST_TYPES | {"ack"}) - documented
    assert not missing, f"not in docs/asyncapi.yaml: {sorted(missing)}"

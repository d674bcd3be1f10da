"""eid.result through the command processor: checked like a command, never acked, matched once;
eid.verify through the outbox: on P/req, published before alerts and events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jwcrypto import jwk

from agent.contract.keys import create_gateway_keys, load_gateway_keys, load_platform_keys
from agent.contract.messages import Command
from agent.grants.store import GrantStore
from agent.state.secretbox import SecretBox
from agent.state.store import Store
from agent.sync.applier import GatewayApplier
from agent.sync.commands import CommandProcessor
from agent.sync.outbox import Outbox
from firmware_sim.platform import PlatformSim, SimKeys, new_okp, open_jw

GW = "bldg-001"
RESULT = {"request_id": "req-1", "status": "failed", "error": "code_expired"}


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.keys = SimKeys()
        create_gateway_keys(tmp / "gateway.jwks")
        (tmp / "platform.jwks").write_text(json.dumps(self.keys.public_jwks()))
        self.gw_keys = load_gateway_keys(tmp / "gateway.jwks")
        pf_keys = load_platform_keys(tmp / "platform.jwks")
        self.store = Store.open(tmp / "lockgw.db")
        self.outbox = Outbox(self.store, GW, self.gw_keys, pf_keys)
        grants = GrantStore(self.store, SecretBox.load_or_create(tmp / "local.key"), pf_keys)
        self.delivered: list[dict[str, Any]] = []
        self.proc = CommandProcessor(
            self.store,
            self.outbox,
            GW,
            self.gw_keys,
            pf_keys,
            GatewayApplier(grants, {"door-1"}, unlock=lambda *a: None),
            on_eid_result=self.deliver,
        )
        self.sim = PlatformSim("127.0.0.1", 1, {GW: self.gw_keys.public_set}, self.keys)

    def deliver(self, command: Command) -> str:
        self.delivered.append(command.body)
        return "matched"

    def send(self, body: dict[str, Any], **kw: Any) -> Any:
        return self.proc.handle(self.sim.build(GW, "eid.result", body, **kw)[1].encode())

    def sent(self) -> list[tuple[str, str]]:
        verify = {
            k["kid"]: jwk.JWK(**k) for k in self.gw_keys.public_set["keys"] if k["crv"] == "Ed25519"
        }
        return [
            (item.kind, open_jw(item.sealed, self.keys.enc, verify)["type"])
            for item in self.outbox.next_batch({}, 1000)
        ]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_a_valid_result_is_handed_over_once_and_never_acked(rig: Rig) -> None:
    _cmd_id, text = rig.sim.build(GW, "eid.result", RESULT)
    assert rig.proc.handle(text.encode()).reason == "eid_matched"
    again = rig.proc.handle(text.encode())
    assert (again.status, again.reason) == ("dropped", "eid_replayed")
    assert rig.delivered == [RESULT]
    assert rig.sent() == [], "eid.result is not answered"
    assert rig.proc.counters["eid_matched"] == 1
    assert rig.proc.counters["dropped_eid_replayed"] == 1


@pytest.mark.parametrize(
    ("kwargs", "body", "counter"),
    [
        ({"exp_s": -5}, RESULT, "dropped_eid_expired"),
        ({"envelope_gw": "other-gw-02"}, RESULT, "dropped_eid_wrong_gw"),
        ({}, {"request_id": "r", "status": "verified"}, "dropped_eid_invalid"),
        ({}, {"request_id": "r", "status": "maybe"}, "dropped_eid_invalid"),
        (
            {},
            {"request_id": "r", "status": "failed", "identity": {"name": "x"}},
            "dropped_eid_invalid",
        ),
    ],
)
def test_bad_results_are_dropped_counted_and_not_answered(
    rig: Rig, kwargs: dict[str, Any], body: dict[str, Any], counter: str
) -> None:
    assert rig.send(body, **kwargs).status == "dropped"
    assert rig.delivered == []
    assert rig.sent() == []
    assert rig.proc.counters[counter] == 1


def test_a_result_signed_by_an_unpinned_key_is_dropped(rig: Rig) -> None:
    assert rig.send(RESULT, sig=new_okp("Ed25519")).status == "dropped"
    assert rig.delivered == [] and rig.sent() == []


def test_requests_go_on_req_before_alerts_acks_and_events(rig: Rig) -> None:
    at, by = "2026-12-02T10:00:00.000Z", "2026-12-02T10:00:03.000Z"
    rig.outbox.enqueue("door.state", {"lock": "door-1", "state": "closed", "at": at})
    rig.outbox.enqueue("alert.tamper", {"lock": "door-1", "at": at})
    verify = {
        "request_id": "0b6f3f43-4b47-4a8e-9d0c-1f9a3b8e2c11",
        "lock": "door-1",
        "code": "CTID1.abc",
        "live_jpeg_b64": "/9j/4AAQ",
        "at": at,
        "answer_by": by,
    }
    rig.outbox.enqueue("eid.verify", verify)
    assert rig.sent() == [("req", "eid.verify"), ("alert", "alert.tamper"), ("evt", "door.state")]


def test_a_request_waiting_longer_than_ten_seconds_is_not_sent(rig: Rig) -> None:
    from agent.contract.messages import MessageError

    body = {
        "request_id": "r1",
        "lock": "door-1",
        "code": "CTID1.abc",
        "live_jpeg_b64": "/9j/4AAQ",
        "at": "2026-12-02T10:00:00.000Z",
        "answer_by": "2026-12-02T10:00:10.500Z",
    }
    with pytest.raises(MessageError) as info:
        rig.outbox.enqueue("eid.verify", body)
    assert info.value.field == "body.answer_by"
    assert rig.sent() == []

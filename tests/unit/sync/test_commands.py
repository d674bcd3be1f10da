"""Commands: applied exactly once and acked; every kind of bad command changes nothing."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.contract.keys import create_gateway_keys, load_gateway_keys, load_platform_keys
from agent.contract.messages import Command, CommandRejected
from agent.grants.store import GrantStore
from agent.state.migrations import MIGRATIONS
from agent.state.secretbox import SecretBox
from agent.state.store import Store
from agent.sync.applier import GatewayApplier
from agent.sync.commands import CommandProcessor
from agent.sync.outbox import Outbox
from firmware_sim.platform import PlatformSim, SimKeys, open_jw

GW = "bldg-001"
LOCKS = {"door-1", "door-2", "door-3"}
ID_NUMBER = "11010519491231002X"  # the simulator's synthetic guest


class Rig:
    def __init__(self, tmp: Path, max_payload: int = 64 * 1024) -> None:
        self.keys = SimKeys()
        create_gateway_keys(tmp / "gateway.jwks")
        (tmp / "platform.jwks").write_text(json.dumps(self.keys.public_jwks()))
        self.gw_keys = load_gateway_keys(tmp / "gateway.jwks")
        self.pf_keys = load_platform_keys(tmp / "platform.jwks")
        self.store = Store.open(tmp / "lockgw.db")
        self.box = SecretBox.load_or_create(tmp / "local.key")
        self.outbox = Outbox(self.store, GW, self.gw_keys, self.pf_keys)
        self.unlocks: list[tuple[str, float, str]] = []
        self.grants = GrantStore(self.store, self.box, self.pf_keys)
        self.applier = GatewayApplier(self.grants, LOCKS, unlock=self.record_unlock)
        self.proc = CommandProcessor(
            self.store,
            self.outbox,
            GW,
            self.gw_keys,
            self.pf_keys,
            self.applier,
            max_payload_bytes=max_payload,
        )
        # The simulator only builds payloads here; it never connects.
        self.sim = PlatformSim(
            "127.0.0.1", 1, {GW: self.gw_keys.public_set}, self.keys, client_id="unit"
        )

    def record_unlock(self, lock: str, seconds: float, reason: str) -> None:
        self.unlocks.append((lock, seconds, reason))

    def send(self, msg_type: str, body: dict[str, Any], **kw: Any) -> tuple[str, Any]:
        cmd_id, text = self.sim.build(GW, msg_type, body, **kw)
        return cmd_id, self.proc.handle(text.encode())

    def acks(self) -> dict[str, dict[str, Any]]:
        from jwcrypto import jwk

        verify = {
            k["kid"]: jwk.JWK(**k) for k in self.gw_keys.public_set["keys"] if k["crv"] == "Ed25519"
        }
        out = {}
        for item in self.outbox.next_batch({}, 10_000):
            env = open_jw(item.sealed, self.keys.enc, verify)
            if env["type"] == "ack":
                out[env["body"]["cmd_id"]] = env["body"]
        return out

    def grant_ids(self) -> list[str]:
        with self.store.read() as conn:
            return [r[0] for r in conn.execute("SELECT grant_id FROM grants ORDER BY 1")]

    def verified(self) -> dict[str, bool]:
        """grant_id -> whether its signed text verifies now."""
        return {g["grant_id"]: g["verified"] for g in self.grants.list_masked(time.time())}

    def signed_count(self) -> int:
        with self.store.read() as conn:
            return int(conn.execute("SELECT count(*) FROM grants_signed").fetchone()[0])


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_grant_put_is_stored_signed_sealed_and_reverified(rig: Rig, tmp_path: Path) -> None:
    body = PlatformSim.grant_body("g-1", ["door-1"])
    cmd_id, outcome = rig.send("grant.put", body)
    assert outcome.status == "ok"
    assert rig.acks()[cmd_id] == {"cmd_id": cmd_id, "status": "ok"}
    assert rig.grant_ids() == ["g-1"]
    [guest] = rig.grants.guests_for_card(ID_NUMBER)
    assert (guest.grant_id, guest.locks, guest.room) == ("g-1", ("door-1",), "101")
    assert rig.verified() == {"g-1": True}
    rig.store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("lockgw.db*"))
    assert ID_NUMBER.encode() not in raw and "测试".encode() not in raw


def test_edited_grant_row_no_longer_verifies(rig: Rig) -> None:
    rig.send("grant.put", PlatformSim.grant_body("g-1", ["door-1"]))
    rig.send("grant.put", PlatformSim.grant_body("g-2", ["door-2"]))
    [before] = [g for g in rig.grants.guests_for_card(ID_NUMBER) if g.grant_id == "g-1"]
    with rig.store.write() as conn:
        # widening a row's locks or end changes nothing: the signed text decides
        conn.execute(
            'UPDATE grants SET locks = \'["door-1", "door-9"]\','
            " valid_until = valid_until + 86400 * 365 WHERE grant_id = 'g-1'"
        )
    [after] = [g for g in rig.grants.guests_for_card(ID_NUMBER) if g.grant_id == "g-1"]
    assert (after.locks, after.valid_until) == (("door-1",), before.valid_until)
    with rig.store.write() as conn:
        # point g-1 at g-2's signed command: g-1 is not in it, so g-1 opens nothing
        conn.execute(
            "UPDATE grants SET cmd_id = (SELECT cmd_id FROM grants WHERE grant_id = 'g-2')"
            " WHERE grant_id = 'g-1'"
        )
    assert [g.grant_id for g in rig.grants.guests_for_card(ID_NUMBER)] == ["g-2"]
    assert rig.verified() == {"g-1": False, "g-2": True}
    with rig.store.write() as conn:
        conn.execute("UPDATE grants_signed SET jws_sealed = x'00'")
    assert rig.grants.guests_for_card(ID_NUMBER) == []
    assert rig.verified() == {"g-1": False, "g-2": False}


def test_stored_grant_signed_by_an_unpinned_key_is_refused(rig: Rig, tmp_path: Path) -> None:
    rig.send("grant.put", PlatformSim.grant_body("g-1", ["door-1"]))
    other = SimKeys()
    (tmp_path / "other.jwks").write_text(json.dumps(other.public_jwks()))
    elsewhere = GrantStore(rig.store, rig.box, load_platform_keys(tmp_path / "other.jwks"))
    assert elsewhere.guests_for_card(ID_NUMBER) == []
    assert [g["verified"] for g in elsewhere.list_masked(time.time())] == [False]
    assert len(rig.grants.guests_for_card(ID_NUMBER)) == 1


def test_revoke_sync_unlock_ping(rig: Rig) -> None:
    rig.send("grant.put", PlatformSim.grant_body("g-1", ["door-1"]))
    rig.send("grant.put", PlatformSim.grant_body("g-2", ["door-2"]))
    cmd_revoke, outcome = rig.send("grant.revoke", {"grant_id": "g-1", "reason": "checkout"})
    assert outcome.status == "ok" and rig.grant_ids() == ["g-2"]
    assert rig.signed_count() == 1  # g-1's signed text went with it
    sync_body = {
        "grants": [PlatformSim.grant_body(g, ["door-3"]) for g in ("g-3", "g-4")],
    }
    _, outcome = rig.send("grant.sync", sync_body)
    assert outcome.status == "ok" and rig.grant_ids() == ["g-3", "g-4"]
    by_grant = {g.grant_id: g.locks for g in rig.grants.guests_for_card(ID_NUMBER)}
    assert by_grant == {"g-3": ("door-3",), "g-4": ("door-3",)}
    assert rig.signed_count() == 1
    cmd_unlock, outcome = rig.send(
        "lock.unlock", {"lock": "door-3", "seconds": 5, "reason": "guest locked out"}
    )
    assert outcome.status == "ok" and rig.unlocks == [("door-3", 5.0, "guest locked out")]
    cmd_ping, outcome = rig.send("ping", {})
    acks = rig.acks()
    assert all(acks[c]["status"] == "ok" for c in (cmd_revoke, cmd_unlock, cmd_ping))
    assert rig.proc.counters["applied"] == 6


def test_empty_sync_removes_every_grant_and_its_signed_text(rig: Rig) -> None:
    rig.send("grant.put", PlatformSim.grant_body("g-1", ["door-1"]))
    _, outcome = rig.send("grant.sync", {"grants": []})
    assert outcome.status == "ok"
    assert rig.grant_ids() == [] and rig.signed_count() == 0
    assert rig.grants.guests_for_card(ID_NUMBER) == []


def test_sync_ack_releases_the_outbox_and_is_not_answered(rig: Rig) -> None:
    rig.outbox.enqueue_many(
        [
            (
                "lock.status",
                {"lock": "l", "online": True, "tamper": False, "at": "2026-01-01T00:00:00Z"},
            )
        ]
        * 5
    )
    _, outcome = rig.send("sync.ack", {"through_seq": 3})
    assert outcome.status == "synced"
    assert [i.seq for i in rig.outbox.next_batch({}, 10)] == [4, 5]
    _, outcome = rig.send("sync.ack", {"through_seq": 99})
    assert (outcome.status, outcome.reason) == ("dropped", "sync_ack_ahead")
    assert rig.outbox.stats().depth == 2 and rig.acks() == {}


def test_applier_refusal_rolls_back_its_changes(rig: Rig) -> None:
    class Half(GatewayApplier):
        def apply(self, conn: sqlite3.Connection, command: Command) -> Callable[[], None] | None:
            super().apply(conn, command)
            raise CommandRejected("unknown_lock", "door-9: no such lock")

    rig.proc._applier = Half(rig.grants, LOCKS, unlock=rig.record_unlock)
    cmd_id, outcome = rig.send("grant.put", PlatformSim.grant_body("g-1", ["door-9"]))
    assert outcome.status == "rejected"
    assert rig.acks()[cmd_id] == {
        "cmd_id": cmd_id,
        "status": "rejected",
        "error": "unknown_lock: door-9: no such lock",
    }
    assert rig.grant_ids() == [] and rig.signed_count() == 0
    assert rig.grants.guests_for_card(ID_NUMBER) == []


def test_unlock_of_a_lock_this_gateway_lacks_is_rejected(rig: Rig) -> None:
    cmd_id, outcome = rig.send("lock.unlock", {"lock": "door-9", "seconds": 3, "reason": "x"})
    assert outcome.status == "rejected"
    assert rig.acks()[cmd_id]["error"].startswith("unknown_lock: ")
    assert "no lock 'door-9'" in rig.acks()[cmd_id]["error"]
    assert rig.unlocks == []


@pytest.mark.parametrize(
    ("kind", "answered", "reason"),
    [
        ("unknown_key", False, "dropped_bad_signature"),
        ("tampered", False, "dropped_undecryptable"),
        ("garbage", False, "dropped_malformed"),
        ("not_jwe", False, "dropped_malformed"),
        ("oversized", True, "rejected_too_large"),
        ("wrong_gw", True, "rejected_wrong_gw"),
        ("expired", True, "rejected_expired"),
        ("invalid_body", True, "rejected_invalid_body"),
    ],
)
def test_bad_commands_change_nothing(rig: Rig, kind: str, answered: bool, reason: str) -> None:
    cmd_id, payload = rig.sim.bad_command(GW, kind, size_limit=64 * 1024)
    outcome = rig.proc.handle(payload)
    assert rig.proc.counters.get(reason) == 1, rig.proc.counters
    assert rig.proc.counters["applied"] == 0
    assert rig.grant_ids() == []
    acks = rig.acks()
    if answered:
        assert outcome.status == "rejected"
        code = reason.removeprefix("rejected_")
        assert acks[cmd_id or ""]["status"] == "rejected"
        assert acks[cmd_id or ""]["error"].startswith(f"{code}: ")  # contract section 3
    else:
        assert outcome.status == "dropped" and acks == {}
    # a second copy is never answered again
    rig.proc.handle(payload)
    assert len(rig.acks()) == len(acks)


def test_replay_is_rejected_once_and_not_applied_again(rig: Rig) -> None:
    cmd_id, text = rig.sim.build(GW, "lock.unlock", {"lock": "door-1", "seconds": 2, "reason": "r"})
    assert rig.proc.handle(text.encode()).status == "ok"
    assert rig.proc.handle(text.encode()).reason == "replayed"
    assert rig.proc.handle(text.encode()).status == "dropped"
    assert rig.unlocks == [("door-1", 2.0, "r")]
    assert rig.proc.counters["rejected_replayed"] == 2
    ack_count = sum(1 for i in rig.outbox.next_batch({}, 100) if i.type == "ack")
    assert ack_count == 2  # ok, then one "replay" rejection
    assert rig.acks()[cmd_id]["status"] in ("ok", "rejected")


def test_replay_survives_restart_and_prune_keeps_live_ids(rig: Rig, tmp_path: Path) -> None:
    _, text = rig.sim.build(GW, "ping", {}, exp_s=600)
    rig.proc.handle(text.encode())
    assert rig.proc.prune() == 0
    rig.store.close()
    again = Rig.__new__(Rig)
    again.__dict__.update(rig.__dict__)
    again.store = Store.open(tmp_path / "lockgw.db")
    again.outbox = Outbox(again.store, GW, rig.gw_keys, rig.pf_keys)
    again.proc = CommandProcessor(
        again.store, again.outbox, GW, rig.gw_keys, rig.pf_keys, rig.applier
    )
    assert again.proc.handle(text.encode()).reason == "replayed"


def test_on_verified_gets_the_timestamp_of_verified_commands_only(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    seen: list[float] = []
    rig.proc._on_verified = seen.append
    rig.send("ping", {})
    rig.proc.handle(rig.sim.bad_command(GW, "unknown_key")[1])
    rig.proc.handle(rig.sim.bad_command(GW, "tampered")[1])
    assert len(seen) == 1 and abs(seen[0] - time.time()) < 60


def test_migration_4_drops_the_stand_in_index_and_signed_text_only_it_used(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lockgw.db"
    old = Store.open(path, MIGRATIONS[:3])
    with old.write() as conn:
        conn.executemany(
            "INSERT INTO grants_signed (cmd_id, cmd_type, jws_sealed, received_at)"
            " VALUES (?, 'grant.put', x'01', 'then')",
            [("stand-in",), ("kept",)],
        )
        conn.execute("INSERT INTO grants_raw VALUES ('g-old', 'stand-in', 'then')")
        conn.execute(
            "INSERT INTO grants (grant_id, cmd_id, valid_from, valid_until, locks, received_at)"
            " VALUES ('g-1', 'kept', 0, 1, '[]', 0)"
        )
    old.close()
    new = Store.open(path)
    try:
        assert new.schema_version() == len(MIGRATIONS)
        with new.read() as conn:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            assert not {"grants_raw", "grants_raw_by_cmd"} & names
            assert [r[0] for r in conn.execute("SELECT cmd_id FROM grants_signed")] == ["kept"]
            assert [r[0] for r in conn.execute("SELECT grant_id FROM grants")] == ["g-1"]
    finally:
        new.close()

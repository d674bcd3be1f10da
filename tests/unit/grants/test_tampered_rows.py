"""An attacker editing the database file (a separate sqlite3 connection) opens nothing.

Each test edits the gateway's database the way someone with the file would, then
asks the door decision what it would do: the edit hides rows, never widens them,
and raises the ``state_tampered`` incident.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.door.decision import DoorHistory, Presentation, SitePolicy, decide
from agent.grants.store import GrantStore
from agent.state.store import Store
from firmware_sim.platform import PlatformSim
from tests.unit.sync.test_commands import ID_NUMBER, Rig

POLICY = SitePolicy(reentry_requires_face=False)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    rig.store.close()


def _attacker(tmp_path: Path) -> sqlite3.Connection:
    """Another process's connection to the same database file."""
    return sqlite3.connect(tmp_path / "lockgw.db", isolation_level=None)


def _grant(grant_id: str, pin: str | None = None) -> dict[str, Any]:
    body = PlatformSim.grant_body(grant_id, ["door-1"])
    if pin is not None:
        body["pin"] = pin
    return body


def _card(rig: Rig) -> Any:
    candidates = rig.grants.guests_for_card(ID_NUMBER)
    return decide(
        Presentation("door-1", "card", id_number=ID_NUMBER),
        candidates,
        DoorHistory(),
        POLICY,
        time.time(),
        time.time(),
    )


def _pin(rig: Rig, pin: str) -> Any:
    return decide(
        Presentation("door-1", "pin", pin=pin),
        rig.grants.guests_for_pin(pin),
        DoorHistory(),
        POLICY,
        time.time(),
        time.time(),
    )


def _incidents(rig: Rig) -> list[str]:
    with rig.store.read() as conn:
        return [r[0] for r in conn.execute("SELECT kind FROM incidents")]


def _check_in(rig: Rig, grant_id: str) -> None:
    with rig.store.write() as conn:
        rig.grants.mark_checked_in(conn, grant_id, f"{grant_id}-g1", time.time(), 7)


def test_a_checked_in_mark_set_in_the_file_opens_nothing(rig: Rig, tmp_path: Path) -> None:
    rig.send("grant.put", _grant("g-1", pin="4321"))
    assert _pin(rig, "4321").reason == "pin_before_checkin"
    assert _card(rig).reason == "face_required"  # first entry: card and face
    db = _attacker(tmp_path)
    db.execute("UPDATE grant_guests SET checked_in_at = 1800000000")
    db.close()
    assert not _pin(rig, "4321").granted
    assert not _card(rig).granted  # card alone where re-entry is card-only: refused
    assert _incidents(rig) == ["state_tampered"]
    assert rig.verified() == {"g-1": False}  # `lockgw grants list` shows it


def test_a_real_check_in_is_honoured_and_survives_a_replacement(rig: Rig) -> None:
    rig.send("grant.put", _grant("g-1", pin="4321"))
    _check_in(rig, "g-1")
    assert _pin(rig, "4321").granted
    assert _card(rig).reason == "card"  # card-only re-entry
    rig.send("grant.put", _grant("g-1", pin="4321"))  # the platform replaces the grant
    assert _pin(rig, "4321").granted
    assert _incidents(rig) == []


def test_reinserted_rows_of_a_revoked_grant_open_nothing(rig: Rig, tmp_path: Path) -> None:
    # Both grants in one grant.sync: they share one signed text, which stays stored
    # after g-1 is revoked because g-2 still refers to it.
    rig.send("grant.sync", {"grants": [_grant("g-1"), _grant("g-2")]})
    db = _attacker(tmp_path)
    saved_grant = db.execute("SELECT * FROM grants WHERE grant_id = 'g-1'").fetchall()
    saved_guests = db.execute("SELECT * FROM grant_guests WHERE grant_id = 'g-1'").fetchall()
    rig.send("grant.revoke", {"grant_id": "g-1", "reason": "checkout"})
    assert [g.grant_id for g in rig.grants.guests_for_card(ID_NUMBER)] == ["g-2"]
    db.executemany(
        f"INSERT INTO grants VALUES ({','.join('?' * len(saved_grant[0]))})", saved_grant
    )
    db.executemany(
        f"INSERT INTO grant_guests VALUES ({','.join('?' * len(saved_guests[0]))})", saved_guests
    )
    assert [g.grant_id for g in rig.grants.guests_for_card(ID_NUMBER)] == ["g-2"]
    assert "state_tampered" in _incidents(rig)
    # Deleting the tombstone too: the set no longer verifies, so nothing opens at all
    # until the platform's next grant.sync.
    db.execute("DELETE FROM grant_tombstones")
    db.close()
    assert rig.grants.guests_for_card(ID_NUMBER) == []
    rig.send("grant.sync", {"grants": [_grant("g-2")]})
    assert [g.grant_id for g in rig.grants.guests_for_card(ID_NUMBER)] == ["g-2"]


def test_an_older_version_put_back_opens_nothing(rig: Rig, tmp_path: Path) -> None:
    rig.send("grant.put", PlatformSim.grant_body("g-1", ["door-1"], hours=240))
    db = _attacker(tmp_path)
    old_grant = db.execute("SELECT * FROM grants").fetchall()
    old_guests = db.execute("SELECT * FROM grant_guests").fetchall()
    old_signed = db.execute("SELECT * FROM grants_signed").fetchall()
    rig.send("grant.put", PlatformSim.grant_body("g-1", ["door-1"], hours=1))  # stay shortened
    db.execute("DELETE FROM grants")
    db.execute("DELETE FROM grant_guests")
    db.executemany("INSERT OR IGNORE INTO grants_signed VALUES (?, ?, ?, ?)", old_signed)
    db.executemany(f"INSERT INTO grants VALUES ({','.join('?' * len(old_grant[0]))})", old_grant)
    db.executemany(
        f"INSERT INTO grant_guests VALUES ({','.join('?' * len(old_guests[0]))})", old_guests
    )
    db.close()
    assert rig.grants.guests_for_card(ID_NUMBER) == []
    assert "state_tampered" in _incidents(rig)


def test_edits_made_while_the_daemon_was_stopped_are_found_at_the_next_start(
    rig: Rig, tmp_path: Path
) -> None:
    rig.send("grant.sync", {"grants": [_grant("g-1"), _grant("g-2")]})
    rig.send("grant.revoke", {"grant_id": "g-1", "reason": "checkout"})
    rig.store.close()
    db = _attacker(tmp_path)
    db.execute("UPDATE grant_tombstones SET version = 0")
    db.close()
    rig.store = Store.open(tmp_path / "lockgw.db")
    grants = GrantStore(rig.store, rig.box, rig.pf_keys)
    assert grants.guests_for_card(ID_NUMBER) == []


def test_a_pin_lockout_survives_a_restart_and_an_edited_one_is_refused(
    rig: Rig, tmp_path: Path
) -> None:
    from agent.state.lockouts import LockoutState, PinLockouts
    from agent.state.rowmac import RowMac

    lockouts = PinLockouts(rig.store, RowMac(rig.box))
    lockouts.put("door-1", LockoutState(0, 1_800_000_300.0))
    rig.store.close()
    rig.store = Store.open(tmp_path / "lockgw.db")
    lockouts = PinLockouts(rig.store, RowMac(rig.box))
    assert lockouts.get("door-1") == LockoutState(0, 1_800_000_300.0)
    db = _attacker(tmp_path)
    db.execute("UPDATE pin_lockouts SET locked_until = 9e15")  # lock every guest out for ever
    db.close()
    assert lockouts.get("door-1") == LockoutState()
    assert _incidents(rig) == ["state_tampered"]


def test_grants_stored_before_row_macs_keep_working_after_the_upgrade(
    rig: Rig, tmp_path: Path
) -> None:
    from agent.state.migrations import MIGRATIONS

    rig.send("grant.put", _grant("g-1", pin="4321"))
    _check_in(rig, "g-1")
    old = tmp_path / "old"
    old.mkdir()
    # The same grant as a schema-4 database held it (no versions, no MACs).
    v4 = Store.open(old / "lockgw.db", MIGRATIONS[:4])
    src = _attacker(tmp_path)
    with v4.write() as conn:
        conn.executemany(
            "INSERT INTO grants_signed VALUES (?, ?, ?, ?)",
            src.execute("SELECT * FROM grants_signed").fetchall(),
        )
        conn.executemany(
            "INSERT INTO grants (grant_id, cmd_id, valid_from, valid_until, locks, pin_hash,"
            " received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            src.execute(
                "SELECT grant_id, cmd_id, valid_from, valid_until, locks, pin_hash, received_at"
                " FROM grants"
            ).fetchall(),
        )
        conn.executemany(
            "INSERT INTO grant_guests (grant_id, guest_id, id_hash, template, template_status,"
            " checked_in_at) VALUES (?, ?, ?, ?, ?, ?)",
            src.execute(
                "SELECT grant_id, guest_id, id_hash, template, template_status, checked_in_at"
                " FROM grant_guests"
            ).fetchall(),
        )
    src.close()
    v4.close()
    upgraded = Store.open(old / "lockgw.db")
    original = rig.store
    rig.grants, rig.store = GrantStore(upgraded, rig.box, rig.pf_keys), upgraded
    assert _pin(rig, "4321").granted  # the check-in survived the upgrade, now under a MAC
    assert _incidents(rig) == []
    upgraded.close()
    rig.store = original  # the fixture closes it


def test_a_sync_removal_leaves_a_tombstone_until_the_grant_ends(rig: Rig) -> None:
    rig.send("grant.sync", {"grants": [_grant("g-1"), _grant("g-2")]})
    rig.send("grant.sync", {"grants": [_grant("g-2")]})
    with rig.store.read() as conn:
        [(grant_id, until)] = conn.execute("SELECT grant_id, until FROM grant_tombstones")
    assert grant_id == "g-1" and until > time.time()
    rig.grants.purge_ended(until - 1)
    with rig.store.read() as conn:
        assert conn.execute("SELECT count(*) FROM grant_tombstones").fetchone()[0] == 1
    rig.grants.purge_ended(until + 1)  # past the grant's end (g-2 ends then too)
    with rig.store.read() as conn:
        assert conn.execute("SELECT count(*) FROM grant_tombstones").fetchone()[0] == 0
    assert _incidents(rig) == []

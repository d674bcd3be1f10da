"""Disk full on a real (small) tmpfs: refusals and the disk_full incident are still
recorded from the reserve, an opening that cannot be recorded never unlocks, and the
reserve comes back by itself when space returns."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.contract.keys import load_gateway_keys, load_platform_keys
from agent.door.alerts import AlertPolicy, AlertRules
from agent.door.decision import Decision
from agent.door.doors import DoorDevices, VisitOutcome
from agent.door.occupancy import OccupantWatch
from agent.door.opening import DoorOpener
from agent.door.recorder import VisitRecorder
from agent.door.records import door_opened
from agent.grants.store import GrantStore
from agent.state.clock import ClockGuard
from agent.state.reserve import DiskReserve
from agent.state.secretbox import SecretBox
from agent.state.store import Store
from agent.sync.outbox import Outbox
from firmware_sim.platform import SimKeys
from tests.support.clocks import SettableClocks
from tests.support.disk import fill, small_tmpfs
from tests.support.mqtt import write_key_files


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "state") as mount:
        yield mount


class Lock:
    def __init__(self) -> None:
        self.unlocks = 0

    def unlock(self, address: int, seconds: float) -> None:
        self.unlocks += 1

    def feedback(self, address: int, granted: bool) -> None:
        pass


def test_full_disk_records_refusals_from_the_reserve_and_recovers(
    small_disk: Path, tmp_path: Path
) -> None:
    keys = SimKeys()
    write_key_files(tmp_path / "keys", keys.public_jwks())
    store = Store.open(small_disk / "lockgw.db")
    pf = load_platform_keys(tmp_path / "keys" / "platform.jwks")
    outbox = Outbox(store, "bldg-disk", load_gateway_keys(tmp_path / "keys" / "gateway.jwks"), pf)
    grants = GrantStore(store, SecretBox.load_or_create(small_disk / "local.key"), pf)
    rules = AlertRules(AlertPolicy())
    reserve = DiskReserve(small_disk, size=1024 * 1024)
    assert reserve.ensure()
    recorder = VisitRecorder(store, outbox, grants, rules, reserve)
    filler = fill(small_disk)
    denied = recorder.refusal(
        "door-1", Decision(False, "no_grant", ""), time.time(), id_number=None, method="id_card"
    )
    seqs = recorder.commit(denied)  # the disk is full: the reserve makes room
    assert all(s is not None for s in seqs)
    assert not reserve.held
    with store.read() as conn:
        [(kind,)] = conn.execute("SELECT kind FROM incidents").fetchall()
    assert kind == "disk_full"
    # While the disk is full nothing opens: the reserve's room is kept for refusals, and
    # the opening is refused disk_full (recorded).
    lock = Lock()
    opener = DoorOpener(
        recorder, OccupantWatch(None, rules, time.time, recorder.commit, 1.0), time.time, print
    )
    door = DoorDevices("door-1", "101", "bus0", 1, 1.0, lock, None)
    body = door_opened(lock="door-1", method=["remote"], at=time.time(), remote="r")
    assert recorder.disk_full

    def admit() -> VisitOutcome:
        return asyncio.run(
            opener.admit(door, Decision(True, "remote", ""), [("door.opened", body)], 0.0, now=1.0)
        )

    outcome = admit()
    assert (outcome.granted, outcome.reason) == (False, "disk_full")
    assert outcome.seqs and outcome.seqs[-1] is not None  # the refusal is recorded
    with store.read() as conn:
        [(last,)] = conn.execute("SELECT type FROM outbox ORDER BY seq DESC LIMIT 1").fetchall()
    assert last == "access.denied"
    # Even the reserve spent: nothing can be written, the door stays locked all the same.
    fill(small_disk)
    outcome = admit()
    assert (outcome.granted, outcome.reason, outcome.seqs) == (False, "disk_full", ())
    assert lock.unlocks == 0  # fail secure: the door stayed locked
    # Space comes back: the reserve is taken again, records go in as usual.
    for extra in small_disk.glob("filler*"):
        extra.unlink()
    filler.unlink(missing_ok=True)
    assert reserve.ensure() and reserve.held
    assert not recorder.disk_full
    assert recorder.commit(denied)[0] is not None
    assert admit().granted and lock.unlocks == 1
    store.close()
    assert json.dumps(os.statvfs(small_disk).f_bavail > 0)


def test_trusted_time_runs_on_when_its_anchor_cannot_be_written(small_disk: Path) -> None:
    # Every door reads the clock, which persists its anchor every 30 s: a full disk must
    # not make the reading fail; the anchor is written once there is room again.
    store = Store.open(small_disk / "lockgw.db")
    clocks = SettableClocks()
    guard = ClockGuard(store, sources=clocks)
    start = guard.now()
    filler = fill(small_disk)
    for _ in range(20):  # enough writes to use up what SQLite's WAL had left
        clocks.elapse(31)
        assert guard.now() > start
    assert guard.counters["persist_failed_disk_full"] > 0
    filler.unlink()
    clocks.elapse(31)
    now = guard.now()
    store.close()
    reopened = Store.open(small_disk / "lockgw.db")
    assert ClockGuard(reopened, sources=clocks).now() >= now
    reopened.close()

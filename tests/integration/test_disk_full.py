"""Disk full on a real (small) tmpfs: refusals and the disk_full incident are still
recorded from the reserve, an opening that cannot be recorded never unlocks, and the
reserve comes back by itself when space returns."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.contract.keys import load_gateway_keys, load_platform_keys
from agent.door.alerts import AlertPolicy, AlertRules
from agent.door.decision import Decision
from agent.door.doors import DoorDevices
from agent.door.occupancy import OccupantWatch
from agent.door.opening import DoorOpener
from agent.door.recorder import VisitRecorder
from agent.door.records import door_opened
from agent.grants.store import GrantStore
from agent.state.reserve import DiskReserve
from agent.state.secretbox import SecretBox
from agent.state.store import Store
from agent.sync.outbox import Outbox
from firmware_sim.platform import SimKeys
from tests.support.mqtt import write_key_files


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "state"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill the disk to the last byte; the filler's path."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    with filler.open("ab", buffering=0) as f, contextlib.suppress(OSError):
        for _ in range(65536):
            f.write(b"\0" * 16)
            f.flush()
    return filler


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
    # An opening when even the reserve is spent: not recorded, so never unlocked.
    fill(small_disk)
    lock = Lock()
    opener = DoorOpener(
        recorder, OccupantWatch(None, rules, time.time, recorder.commit, 1.0), time.time, print
    )
    door = DoorDevices("door-1", "101", "bus0", 1, 1.0, lock, None)
    body = door_opened(lock="door-1", method=["remote"], at=time.time(), remote="r")
    with pytest.raises(Exception):  # noqa: B017 - sqlite3's "database or disk is full"
        asyncio.run(
            opener.admit(door, Decision(True, "remote", ""), [("door.opened", body)], 0.0, now=1.0)
        )
    assert lock.unlocks == 0  # fail secure: the door stayed locked
    # Space comes back: the reserve is taken again, records go in as usual.
    for extra in small_disk.glob("filler*"):
        extra.unlink()
    filler.unlink(missing_ok=True)
    assert reserve.ensure() and reserve.held
    assert recorder.commit(denied)[0] is not None
    store.close()
    assert json.dumps(os.statvfs(small_disk).f_bavail > 0)

"""A database corrupted mid-stream: salvage, declared gaps, and an outbox that drains.

Real Mosquitto, the independent platform simulator, a real SQLite file damaged
on disk, and SQLite's own recovery (``sqlite3 .recover``) or Python's reader.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.contract.messages import format_time, utc_now
from agent.sync.salvage import salvage
from firmware_sim.polling import wait_until
from tests.support.mqtt import GatewayRig, World, have_mosquitto

pytestmark = pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed")

RIG_SETTINGS: dict[str, Any] = {"retry_after_s": 3.0}


def opened(n: int) -> dict[str, Any]:
    return {
        "lock": "door-1",
        "method": ["id_card"],
        "grant_id": f"g-{n}",
        "at": format_time(utc_now()),
    }


def number(env: dict[str, Any]) -> int:
    return int(env["body"]["grant_id"].removeprefix("g-"))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, **RIG_SETTINGS)
    yield w
    w.close()


def corrupt_stream(world: World) -> tuple[Path, list[int]]:
    """50 records delivered, 150 more written while offline, then a page in the middle of
    the file overwritten; returns the database path and the seqs of the 150."""
    rig = world.rig
    rig.outbox.enqueue_many([("door.opened", opened(n)) for n in range(50)])
    world.start_gateway()
    assert wait_until(lambda: rig.outbox.acked_through == 50, 20)
    rig.link.stop(10)
    offline = [rig.outbox.enqueue("door.opened", opened(n)) for n in range(50, 200)]
    rig.store.close()
    db = world.tmp / "state" / "lockgw.db"
    pages = db.stat().st_size // 4096
    with db.open("r+b") as f:  # one page of garbage, two thirds of the way in
        f.seek(pages * 2 // 3 * 4096)
        f.write(os.urandom(4096))
    return db, [s for s in offline if s is not None]


def reopen(world: World, **settings: Any) -> GatewayRig:
    world.rig = GatewayRig(
        world.tmp / "state",
        world.gw,
        world.gw_keys_path,
        world.pf_keys_path,
        world.broker.port,
        **(RIG_SETTINGS | settings),
    )
    return world.rig


def test_corruption_mid_stream_salvage_delivers_each_record_once_and_drains(
    world: World,
) -> None:
    db, offline = corrupt_stream(world)
    rig = reopen(world)
    moved = rig.store.recovery
    assert moved is not None  # the damaged file was moved aside, a fresh one made
    assert rig.outbox.pending_gaps() == [(1, 1001)]  # up to the seq reservation
    new = [rig.outbox.enqueue("door.opened", opened(n)) for n in range(200, 220)]
    assert new[0] == 1002
    report = salvage(rig.outbox, moved.moved_to)
    assert report.old_acked_through == 50 and report.old_last_seq == 200
    assert 100 <= report.restored <= 150  # one page of garbage costs a few records at most
    assert report.restored + report.declared == 1001 - 50
    assert rig.outbox.pending_gaps() == []
    world.start_gateway()
    assert wait_until(lambda: rig.outbox.stats().depth == 0, 30), rig.outbox.stats()
    view = world.sim.view(world.gw)
    numbers = [number(e) for e in world.sim.events(world.gw, "door.opened")]
    assert len(numbers) == len(set(numbers)) == 50 + report.restored + 20
    assert view.duplicates == 0  # nothing was sent twice
    restored = {e["seq"] for e in world.sim.events(world.gw, "door.opened") if 50 < e["seq"] <= 200}
    lost = set(offline) - restored
    assert len(lost) == 150 - report.restored and lost <= view.dropped
    assert not restored & view.dropped  # a record is either delivered or declared, never both
    [notice] = [e for e in world.sim.events(world.gw, "outbox.dropped")]
    assert notice["body"]["reason"] == "database_lost"
    assert view.prefix == rig.outbox.stats().last_seq  # acknowledgement moved past the gap
    assert db.exists() and moved.moved_to.exists()  # the evidence is kept


def test_without_salvage_the_gap_is_declared_after_the_grace_and_the_outbox_drains(
    world: World,
) -> None:
    corrupt_stream(world)
    rig = reopen(world, gap_grace_s=0.0)
    assert rig.outbox.pending_gaps() == []
    rig.outbox.enqueue_many([("door.opened", opened(n)) for n in range(200, 210)])
    world.start_gateway()
    assert wait_until(lambda: rig.outbox.stats().depth == 0, 30), rig.outbox.stats()
    view = world.sim.view(world.gw)
    assert view.prefix == rig.outbox.stats().last_seq
    assert rig.link.counters["republish_rounds"] == 0


def test_salvage_command_line(world: World, lockgw_cmd: list[str]) -> None:
    corrupt_stream(world)
    rig = reopen(world)
    assert rig.store.recovery is not None
    moved = rig.store.recovery.moved_to
    rig.close()
    config = world.tmp / "gateway.toml"
    config.write_text(
        f'[gateway]\nid = "{world.gw}"\nstate_dir = "{world.tmp / "state"}"\n'
        f'control_socket = "{world.tmp / "control.sock"}"\n\n'
        f'[link]\ntransport = "tcp"\nhost = "127.0.0.1"\nport = {world.broker.port}\n\n'
        f'[keys]\ngateway_keys = "{world.gw_keys_path}"\nplatform_keys = "{world.pf_keys_path}"\n',
        encoding="utf-8",
    )
    run = [*lockgw_cmd, "outbox", "salvage", "--config", str(config), str(moved)]
    done = subprocess.run(run, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "restored" in done.stdout and "declared" in done.stdout
    again = subprocess.run(run, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 1 and "no seq range is waiting" in again.stderr, again.stdout
    rig = reopen(world)
    assert rig.outbox.stats().depth >= 100 and rig.outbox.pending_gaps() == []
    # what the command put back goes out, and the outbox drains
    world.start_gateway()
    assert wait_until(lambda: rig.outbox.stats().depth == 0, 30), rig.outbox.stats()
    assert world.sim.view(world.gw).duplicates == 0

"""Issue 14 point 9: a committed message is never left waiting by the link or the outbox.

Door records are committed from several threads while the platform's commands are
answered on the link thread (each ack committed in the middle of the record
stream, as a grant.put answered 70 ms after a door opened). With the republish
timer set far beyond the test (60 s), every ack must reach the platform within
a few seconds by the normal path alone: no republish round, nothing waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.contract.messages import format_time, utc_now
from firmware_sim.platform import PlatformSim
from tests.support.mqtt import World, have_mosquitto

pytestmark = pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, retry_after_s=60.0)
    yield w
    w.close()


def test_acks_committed_amid_door_records_are_never_stalled(world: World) -> None:
    rig, sim, gw = world.rig, world.sim, world.gw
    world.start_gateway()
    stop = threading.Event()

    def doors(k: int) -> None:
        n = 0
        while not stop.is_set():
            body = {
                "lock": "door-1",
                "method": ["id_card", "face"],
                "grant_id": f"g-{k}-{n}",
                "at": format_time(utc_now()),
            }
            rig.outbox.enqueue_many(
                [
                    ("door.opened", body),
                    ("door.state", {"lock": "door-1", "state": "open", "at": body["at"]}),
                ]
            )
            n += 1
            time.sleep(0.005 * k)

    threads = [threading.Thread(target=doors, args=(k,), daemon=True) for k in (1, 2, 3)]
    for t in threads:
        t.start()
    try:
        worst = 0.0
        for i in range(60):
            sent = time.monotonic()
            if i % 2:
                cmd_id = sim.send(gw, "grant.put", PlatformSim.grant_body(f"g-{i}", ["door-1"]))
            else:
                cmd_id = sim.send(gw, "ping", {})
            assert sim.wait_ack(gw, cmd_id, timeout=10)["status"] == "ok"
            worst = max(worst, time.monotonic() - sent)
            time.sleep(0.01 * (i % 7))
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert rig.link.counters["republish_rounds"] == 0
    assert worst < 10
    # and everything committed goes out: the platform's prefix reaches the last seq
    last = rig.outbox.stats().last_seq
    view = sim.view(gw)
    assert sim.wait_for(lambda: view.prefix >= last, 20), (view.prefix, last, view.gaps()[:5])
    assert view.duplicates == 0

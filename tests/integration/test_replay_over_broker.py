"""Captured ciphertext republished on the real broker opens nothing, whatever the clock says.

A real Mosquitto, the platform simulator and the gateway's link, processor and applier;
the gateway's wall clock is the attacker's (injected), its monotonic clock is not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mqtt import World

DAY = 86_400.0


class Clocks:
    def __init__(self) -> None:
        self.wall_now = time.time()
        self._boot0 = time.monotonic()

    def wall(self) -> float:
        return self.wall_now

    def boot(self) -> float:
        return time.monotonic() - self._boot0 + 100.0

    def boot_id(self) -> str:
        return "this-boot"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[World, Clocks]]:
    clocks = Clocks()
    w = World(tmp_path, clock_sources=clocks)
    w.start_gateway()
    yield w, clocks
    w.close()


def test_a_captured_unlock_republished_after_a_clock_excursion_opens_nothing(
    world: tuple[World, Clocks],
) -> None:
    w, clocks = world
    cmd_id, captured = w.sim.build(
        w.gw, "lock.unlock", {"lock": "door-1", "seconds": 3, "reason": "host"}, exp_s=600
    )
    w.sim.publish_raw(w.gw, captured.encode())
    assert w.sim.wait_ack(w.gw, cmd_id)["status"] == "ok"
    assert len(w.rig.unlocks) == 1
    # The attacker runs the wall clock years ahead (the daemon's prune job runs meanwhile),
    # then back to a day before the command was signed, and republishes what they captured.
    clocks.wall_now += 3 * 365 * DAY
    w.rig.processor.prune()
    clocks.wall_now -= 3 * 365 * DAY + DAY
    w.rig.processor.prune()
    view = w.sim.view(w.gw)
    for _ in range(3):
        w.sim.publish_raw(w.gw, captured.encode())
    assert w.sim.wait_for(lambda: len(view.acks.get(cmd_id, [])) == 2, 20)
    second = view.acks[cmd_id][1]
    assert second["status"] == "rejected" and second["error"].startswith("replayed")
    time.sleep(1.0)  # the further copies are dropped unanswered
    assert len(view.acks[cmd_id]) == 2
    assert len(w.rig.unlocks) == 1
    assert w.rig.processor.counters["rejected_replayed"] == 3
    assert w.rig.clock is not None
    assert abs(w.rig.clock.now() - time.time()) < 60  # trusted time was not moved


def test_a_command_stamped_a_month_ahead_is_refused_over_the_broker(
    world: tuple[World, Clocks],
) -> None:
    w, _clocks = world
    cmd_id, text = w.sim.build(w.gw, "ping", {}, ts_offset_s=30 * DAY)
    w.sim.publish_raw(w.gw, text.encode())
    ack = w.sim.wait_ack(w.gw, cmd_id)
    assert ack["status"] == "rejected" and ack["error"].startswith("clock_skew")
    ok_id = w.sim.send(w.gw, "ping", {})
    assert w.sim.wait_ack(w.gw, ok_id)["status"] == "ok"  # the honest platform carries on
    assert w.rig.clock is not None and abs(w.rig.clock.now() - time.time()) < 60

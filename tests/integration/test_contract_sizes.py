"""Contract revision 1.1 sizes over a real Mosquitto: what the broker forwards, what is answered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.contract.limits import MAX_PACKET_BYTES
from firmware_sim.polling import wait_until
from tests.support.mqtt import World, have_mosquitto

pytestmark = pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def test_packets_past_the_announced_maximum_never_reach_the_gateway(world: World) -> None:
    rig, sim, gw = world.rig, world.sim, world.gw
    world.start_gateway()
    # Within the announced Maximum Packet Size but over the 1 MiB payload: answered by name.
    cmd_id, payload = sim.bad_command(gw, "oversized")
    assert len(payload) + 4096 > 1_048_576 and len(payload) < MAX_PACKET_BYTES - 200
    sim.publish_raw(gw, payload)
    ack = sim.wait_ack(gw, cmd_id)
    assert ack["status"] == "rejected" and ack["error"].startswith("too_large: ")
    # Past it: the broker does not forward it (the gateway announced its limit at connect),
    # and a later command still arrives.
    _, big = sim.bad_command(gw, "oversized", size_limit=MAX_PACKET_BYTES + 10_000)
    sim.publish_raw(gw, big)
    ping = sim.send(gw, "ping", {})
    assert sim.wait_ack(gw, ping)["status"] == "ok"
    time.sleep(0.3)
    counters = rig.processor.counters
    assert counters["rejected_too_large"] == 1 and "dropped_oversized" not in counters
    assert wait_until(lambda: rig.link.connected, 5)

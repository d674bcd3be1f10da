"""The MQTT link against a real Mosquitto and the independent platform simulator."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.contract.messages import format_time, utc_now
from firmware_sim.polling import wait_until
from tests.support.mqtt import World, have_mosquitto

pytestmark = pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def at() -> str:
    return format_time(utc_now())


def opened(n: int) -> dict[str, Any]:
    return {"lock": "door-1", "method": ["id_card", "face"], "grant_id": f"g-{n}", "at": at()}


def number(env: dict[str, Any]) -> int:
    """The n of an :func:`opened` body."""
    return int(env["body"]["grant_id"].removeprefix("g-"))


def test_every_command_type_round_trips(world: World) -> None:
    rig, sim, gw = world.rig, world.sim, world.gw
    started = time.monotonic()
    rig.link.start()
    assert time.monotonic() - started < 0.5  # start() never waits for the network
    assert rig.link.wait_connected(15)
    assert sim.wait_for(lambda: (sim.view(gw).status or {}).get("state") == "online", 15)

    ids = {
        "grant.put": sim.send(gw, "grant.put", sim.grant_body("g-1", ["door-1"])),
        "grant.put#2": sim.send(gw, "grant.put", sim.grant_body("g-2", ["door-2"])),
    }
    for cmd_id in ids.values():
        assert sim.wait_ack(gw, cmd_id)["status"] == "ok"
    ids["grant.revoke"] = sim.send(gw, "grant.revoke", {"grant_id": "g-1", "reason": "checkout"})
    assert sim.wait_ack(gw, ids["grant.revoke"])["status"] == "ok"
    ids["grant.sync"] = sim.send(gw, "grant.sync", {"grants": [sim.grant_body("g-3", ["door-3"])]})
    ids["lock.unlock"] = sim.send(
        gw, "lock.unlock", {"lock": "door-3", "seconds": 4, "reason": "x"}
    )
    ids["ping"] = sim.send(gw, "ping", {})
    for name in ("grant.sync", "lock.unlock", "ping"):
        assert sim.wait_ack(gw, ids[name]) == {"cmd_id": ids[name], "status": "ok"}, name
    assert rig.unlocks == [("door-3", 4.0, "x")]
    listing = rig.grants.list_masked(time.time())
    assert [(g["grant_id"], g["verified"], g["locks"]) for g in listing] == [
        ("g-3", True, ["door-3"])
    ]

    seqs = rig.outbox.enqueue_many([("door.opened", opened(n)) for n in range(50)])
    view = sim.view(gw)
    assert sim.wait_for(lambda: view.prefix >= max(s for s in seqs if s), 30)
    events = sim.events(gw, "door.opened")
    assert [number(e) for e in events] == list(range(50))
    assert all(e["gw"] == gw for e in events)
    # sync.ack from the platform empties the outbox
    assert wait_until(lambda: rig.outbox.stats().depth == 0, 15)
    assert view.gaps() == [] and sim.counters["rejected"] == 0


def test_status_and_health(world: World) -> None:
    rig, sim, gw = world.rig, world.sim, world.gw
    rig.link.start()
    view = sim.view(gw)
    assert sim.wait_for(lambda: view.status is not None and view.status["state"] == "online", 15)
    assert sim.wait_for(lambda: view.health is not None, 15)
    health = view.health or {}
    assert {"outbox_depth", "last_seq", "acked_through", "connects"} <= set(health)
    assert all(isinstance(v, int | float | str | type(None)) for v in health.values())
    rig.link.stop(10)
    assert sim.wait_for(lambda: (view.status or {}).get("state") == "offline", 15)


def test_will_message_marks_a_vanished_gateway_offline(tmp_path: Path) -> None:
    world = World(tmp_path, via_proxy=True, keepalive_s=5)
    try:
        assert world.proxy is not None
        world.rig.link.start()
        view = world.sim.view(world.gw)
        assert world.sim.wait_for(lambda: (view.status or {}).get("state") == "online", 15)
        world.proxy.cut()  # resets the link and refuses new connections until restore()
        assert world.sim.wait_for(lambda: (view.status or {}).get("state") == "offline", 20)
        # the will's ts is the time of the connection that registered it, never null
        will_ts = (view.status or {})["ts"]
        assert isinstance(will_ts, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", will_ts)
        world.proxy.restore()
        assert world.sim.wait_for(lambda: (view.status or {}).get("state") == "online", 20)
    finally:
        world.close()


@pytest.mark.parametrize(
    "kind",
    ["unknown_key", "tampered", "wrong_gw", "expired", "invalid_body", "oversized", "garbage"],
)
def test_bad_commands_over_mqtt_are_rejected_and_change_nothing(world: World, kind: str) -> None:
    rig, sim, gw = world.rig, world.sim, world.gw
    world.start_gateway()
    cmd_id, payload = sim.bad_command(gw, kind, size_limit=rig.link._s.max_payload_bytes)
    sim.publish_raw(gw, payload)
    answered = kind in ("wrong_gw", "expired", "invalid_body", "oversized")
    if answered:
        assert cmd_id is not None
        ack = sim.wait_ack(gw, cmd_id)
        assert ack["status"] == "rejected" and ack["error"]
    else:
        assert wait_until(
            lambda: (
                sum(v for k, v in rig.processor.counters.items() if k.startswith("dropped_")) == 1
            ),
            15,
        ), rig.processor.counters
    # a ping afterwards still works: the link survived, and nothing was applied
    ping = sim.send(gw, "ping", {})
    assert sim.wait_ack(gw, ping)["status"] == "ok"
    assert rig.processor.counters["applied"] == 1
    with rig.store.read() as conn:
        assert conn.execute("SELECT count(*) FROM grants").fetchone()[0] == 0
    if not answered:
        assert len(sim.view(gw).acks) == 1


def test_replayed_command_over_mqtt(world: World) -> None:
    rig, sim, gw = world.rig, world.sim, world.gw
    world.start_gateway()
    cmd_id, text = sim.build(gw, "lock.unlock", {"lock": "door-1", "seconds": 3, "reason": "r"})
    sim.publish_raw(gw, text.encode())
    assert sim.wait_ack(gw, cmd_id)["status"] == "ok"
    sim.publish_raw(gw, text.encode())
    view = sim.view(gw)
    assert sim.wait_for(lambda: len(view.acks[cmd_id]) == 2, 15)
    assert view.acks[cmd_id][1]["status"] == "rejected"
    assert view.acks[cmd_id][1]["error"].startswith("replayed: ")
    assert rig.unlocks == [("door-1", 3.0, "r")]


def test_alert_goes_out_before_queued_events(world: World) -> None:
    rig, sim, gw = world.rig, world.sim, world.gw
    rig.outbox.enqueue_many([("door.opened", opened(n)) for n in range(300)])
    alert_seq = rig.outbox.enqueue(
        "alert.door_forced", {"lock": "door-1", "at": at(), "state": "forced"}
    )
    rig.link.start()
    view = sim.view(gw)
    assert sim.wait_for(lambda: view.prefix >= 301, 30)
    assert view.arrivals[0][:2] == (alert_seq, "alert.door_forced")


def test_puback_is_not_delivery_unacked_messages_are_republished(tmp_path: Path) -> None:
    world = World(tmp_path, retry_after_s=1.0)
    try:
        rig, sim, gw = world.rig, world.sim, world.gw
        sim.auto_ack = False
        rig.link.start()
        rig.outbox.enqueue_many([("door.opened", opened(n)) for n in range(20)])
        view = sim.view(gw)
        assert sim.wait_for(lambda: view.max_seq >= 20, 15)
        # every message was PUBACKed, none acknowledged by the platform: all stay
        assert rig.outbox.stats().depth == 20
        assert sim.wait_for(lambda: view.duplicates >= 20, 15)
        assert rig.link.counters["republish_rounds"] >= 1
        sim.auto_ack = True
        assert wait_until(lambda: rig.outbox.stats().depth == 0, 15)
        assert [number(e) for e in sim.events(gw)] == list(range(20))
    finally:
        world.close()


def test_link_start_never_blocks_and_backs_off_until_the_broker_appears(tmp_path: Path) -> None:
    world = World(tmp_path)
    try:
        world.broker.kill9()
        started = time.monotonic()
        world.rig.link.start()
        assert time.monotonic() - started < 0.5
        assert wait_until(lambda: world.rig.link.counters["connect_failures"] >= 3, 20)
        assert not world.rig.link.connected
        world.rig.outbox.enqueue("door.opened", opened(0))
        world.broker.start()
        assert world.rig.link.wait_connected(20)
        view = world.sim.view(world.gw)
        assert world.sim.wait_for(lambda: view.prefix >= 1, 30)
        assert json.loads(json.dumps(view.messages[1]["body"]))["grant_id"] == "g-0"
    finally:
        world.close()


def test_platform_simulator_is_independent_of_agent() -> None:
    import subprocess
    import sys

    from tests.support.mqtt import REPO

    code = (
        "import sys, firmware_sim.platform\n"
        "bad = sorted(m for m in sys.modules if m == 'agent' or m.startswith('agent.'))\n"
        "assert not bad, bad\n"
        "assert 'joserfc' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr

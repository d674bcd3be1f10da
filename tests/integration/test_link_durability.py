"""Nothing lost, nothing doubled: broker kill -9, network cuts, gateway kill -9."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.contract.messages import format_time, utc_now
from agent.sync.link import Link
from firmware_sim.broker import MosquittoBroker
from firmware_sim.netcut import NetCut
from firmware_sim.platform import PlatformSim, SimKeys
from firmware_sim.polling import wait_until
from tests.support.mqtt import REPO, World, have_mosquitto, write_key_files

pytestmark = [
    pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed"),
    pytest.mark.slow,
]


def number(env: dict[str, Any]) -> int:
    """The n of an :func:`opened` body (-1 for other messages)."""
    grant = str(env["body"].get("grant_id", ""))
    return int(grant[2:]) if grant.startswith("g-") and grant[2:].isdigit() else -1


def opened(n: int) -> dict[str, Any]:
    return {
        "lock": "door-1",
        "method": ["id_card"],
        "grant_id": f"g-{n}",  # the number rides in a documented field
        "at": format_time(utc_now()),
    }


def cut_until_noticed(proxy: NetCut, link: Link) -> None:
    """Cut the network and keep it down until the gateway has seen a reconnect fail."""
    failures = link.counters["connect_failures"]
    proxy.cut()
    assert wait_until(lambda: link.counters["connect_failures"] > failures, 30), link.counters
    proxy.restore()


def assert_complete(sim: PlatformSim, gw: str, total: int, last_seq: int) -> None:
    """Every seq 1..last_seq arrived once (after dedup); events in seq order are 0..total-1."""
    view = sim.view(gw)
    assert view.gaps() == []
    assert sorted(view.messages) == list(range(1, last_seq + 1))
    ns = [number(e) for e in sim.events(gw, "door.opened")]
    assert ns == list(range(total))


def test_10000_events_survive_a_stopped_then_killed_broker(tmp_path: Path) -> None:
    world = World(tmp_path, retry_after_s=3.0)
    try:
        rig, sim, gw = world.rig, world.sim, world.gw
        world.broker.kill9()
        rig.link.start()
        total = 10_000
        for start in range(0, total, 500):
            rig.outbox.enqueue_many([("door.opened", opened(n)) for n in range(start, start + 500)])
        assert rig.outbox.stats().depth == total
        world.broker.start()
        view = sim.view(gw)
        # kill -9 the broker in the middle of the stream, then bring it back
        assert sim.wait_for(lambda: len(view.messages) >= 2000, 60)
        world.broker.kill9()
        time.sleep(0.5)
        world.broker.start()
        assert sim.wait_for(lambda: view.prefix >= total, 120), (view.prefix, view.gaps()[:5])
        assert_complete(sim, gw, total, total)
        assert wait_until(lambda: rig.outbox.stats().depth == 0, 30)
        assert rig.link.counters["connects"] >= 2
    finally:
        world.close()


def test_network_cut_repeatedly_through_a_proxy(tmp_path: Path) -> None:
    world = World(tmp_path, via_proxy=True, retry_after_s=3.0)
    try:
        rig, sim, gw, proxy = world.rig, world.sim, world.gw, world.proxy
        assert proxy is not None
        world.start_gateway()
        total = 4000
        done = threading.Event()

        def produce() -> None:
            for start in range(0, total, 100):
                rig.outbox.enqueue_many(
                    [("door.opened", opened(n)) for n in range(start, start + 100)]
                )
                time.sleep(0.02)
            done.set()

        producer = threading.Thread(target=produce)
        producer.start()
        view = sim.view(gw)
        for i in range(6):
            assert sim.wait_for(lambda i=i: len(view.messages) >= (i + 1) * 400, 60)
            assert rig.link.wait_connected(30)
            cut_until_noticed(proxy, rig.link)
        producer.join(60)
        assert done.is_set()
        assert sim.wait_for(lambda: view.prefix >= total, 120), (view.prefix, view.gaps()[:5])
        assert_complete(sim, gw, total, total)
        # every cut ended a session: the first one and one after each restore
        assert proxy.cuts == 6 and rig.link.counters["connects"] >= 7, rig.link.counters
    finally:
        world.close()


def test_gateway_killed_20_times_during_the_stream(tmp_path: Path) -> None:
    gw, total = "bldg-kill", 3000
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    keys = SimKeys()
    gw_path, _ = write_key_files(tmp_path / "keys", keys.public_jwks())
    sim = PlatformSim("127.0.0.1", broker.port, {gw: json.loads(gw_path.read_text())}, keys)
    seen: dict[int, set[int]] = {}
    lock = threading.Lock()

    def record(_gw: str, env: dict[str, Any]) -> None:
        with lock:
            seen.setdefault(env["seq"], set()).add(number(env))

    sim.on_message_hook = record
    sim.start()
    cmd = [
        sys.executable,
        str(REPO / "tests" / "support" / "link_gateway_proc.py"),
        "--state", str(tmp_path / "state"),
        "--keys", str(tmp_path / "keys"),
        "--port", str(broker.port),
        "--gw", gw,
        "--total", str(total),
        "--batch", "5",
        "--pause", "0.05",
    ]  # fmt: skip
    rng = random.Random(20)
    view = sim.view(gw)
    try:
        kills = 0
        while kills < 20:
            proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0.8, 2.5))
            if proc.poll() is not None:
                pytest.fail(f"gateway exited early: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            kills += 1
        assert 0 < len(view.messages) < total, "the kills must land during the stream"
        final = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=180)
        assert final.returncode == 0, final.stderr.decode()[-2000:]
        assert sim.wait_for(lambda: view.prefix >= total, 30)
        assert_complete(sim, gw, total, total)
        # a seq never carried two different events (seq never reused across restarts)
        assert all(len(ns) == 1 for ns in seen.values())
    finally:
        sim.stop()
        broker.kill9()


def test_lockgw_daemon_killed_20_times_while_events_stream_in(tmp_path: Path) -> None:
    """``lockgw run`` is SIGKILLed 20 times while another process keeps enqueuing events."""
    from agent.contract.keys import load_gateway_keys, load_platform_keys
    from agent.state.store import Store
    from agent.sync.outbox import Outbox

    gw, total = "bldg-daemon", 2000
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    keys = SimKeys()
    gw_path, pf_path = write_key_files(tmp_path / "keys", keys.public_jwks())
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\nid = "{gw}"\nstate_dir = "{state}"\n'
        f'control_socket = "{tmp_path / "control.sock"}"\n'
        f'[link]\nhost = "127.0.0.1"\nport = {broker.port}\ntransport = "tcp"\n'
        "retry_after_s = 3.0\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n"
        f'[keys]\ngateway_keys = "{gw_path}"\nplatform_keys = "{pf_path}"\n'
    )
    sim = PlatformSim("127.0.0.1", broker.port, {gw: json.loads(gw_path.read_text())}, keys)
    sim.start()
    store = Store.open(state / "lockgw.db")
    outbox = Outbox(store, gw, load_gateway_keys(gw_path), load_platform_keys(pf_path))
    produced = threading.Event()

    def produce() -> None:
        for start in range(0, total, 10):
            outbox.enqueue_many([("door.opened", opened(n)) for n in range(start, start + 10)])
            time.sleep(0.12)
        produced.set()

    cmd = [sys.executable, "-m", "agent.cli.main", "run", "--config", str(config)]
    rng = random.Random(21)
    view = sim.view(gw)
    producer = threading.Thread(target=produce, daemon=True)
    try:
        producer.start()
        for _ in range(20):
            proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.5, 2.0))
            assert proc.poll() is None, "lockgw run exited by itself"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        assert not produced.is_set() or len(view.messages) < total
        final = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.DEVNULL)
        try:
            producer.join(120)
            assert produced.is_set()
            assert sim.wait_for(lambda: view.prefix >= total, 60), (view.prefix, view.gaps()[:5])
            assert_complete(sim, gw, total, total)
            assert wait_until(lambda: outbox.stats().depth == 0, 30)
        finally:
            final.terminate()
            final.wait(20)
    finally:
        sim.stop()
        store.close()
        broker.kill9()

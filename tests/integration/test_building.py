"""The simulated building: doors on their paths, control socket, network cut, broker, keys."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import dlib
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config.schema import load_config
from agent.contract.keys import create_gateway_keys, load_gateway_keys, load_platform_keys
from agent.contract.seal import open_sealed, seal
from drivers.camera.sources import FolderSource
from drivers.idcard.reader import CardRead, IdCardReader
from drivers.osdp import DoorStateChanged, LockEvent, LockSpec, OsdpBus
from firmware_sim.broker import BrokerError, MosquittoBroker, accepts, find_mosquitto
from firmware_sim.building import (
    Building,
    BuildingError,
    card_with_photo,
    door_ids,
    guest_entry,
)
from firmware_sim.building_ctl import CtlError, ServedBuilding, ctl_main, request
from firmware_sim.idcards import make_id_number, sample_card
from firmware_sim.netcut import NetCut
from firmware_sim.polling import wait_until

FACES = Path(__file__).resolve().parents[3] / "shared" / "faces"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")


def face(name: str) -> Path:
    path = FACES / "face_recognition" / name
    if not path.is_file():
        pytest.skip(f"face photo {path} not found (../shared/faces beside the repo)")
    return path


@pytest.fixture
def building(tmp_path: Path) -> Iterator[Building]:
    with ServedBuilding(3, tmp_path / "b") as b:
        yield b


# --------------------------------------------------------------- devices
def test_each_door_answers_on_its_own_paths(building: Building) -> None:
    """Locks on the shared bus, one reader per door, each device at the configured path."""
    config = load_config(building.config_path)
    assert [d.id for d in config.doors] == ["L101", "L102", "L103"]
    assert config.buses[0].port == str(building.bus_port)

    events: queue.Queue[LockEvent] = queue.Queue()
    specs = [LockSpec(d.address, secure=False) for d in config.doors]
    with OsdpBus(config.buses[0].port, 115200, specs, events.put) as bus:
        assert wait_until(lambda: all(s.online for s in bus.snapshot()))
        bus.unlock(2, 2.0)
        assert building.wait_relay("L102", True, 10)
        assert not building.relay_unlocked("L101") and not building.relay_unlocked("L103")

        building.open_door("L102")  # unlocked: a normal opening
        building.open_door("L103")  # locked: forced
        seen: list[LockEvent] = []

        def door_states() -> set[tuple[int, str]]:
            while not events.empty():
                seen.append(events.get())
            return {(e.address, e.state.value) for e in seen if isinstance(e, DoorStateChanged)}

        def door_open() -> bool:
            return {(2, "open"), (3, "forced")} <= door_states()

        assert wait_until(door_open)

        building.lock_power("L101", False)
        assert wait_until(lambda: not bus.snapshot()[0].online)
        assert bus.snapshot()[1].online  # the other locks keep answering
        building.lock_power("L101", True)
        assert wait_until(lambda: bus.snapshot()[0].online, 20)

    # Each reader path reaches that door's reader only.
    reads: dict[str, list[CardRead]] = {"L101": [], "L102": []}
    readers = [
        IdCardReader(
            config.door(door).reader_port or "",
            reads[door].append,
            poll_interval=0.05,
        )
        for door in reads
    ]
    cards = {
        "L101": card_with_photo(face("examples/biden.jpg")),
        "L102": sample_card(
            name="李四", id_number=make_id_number(date(1992, 8, 1), "110101", 3, 2)
        ),
    }
    for r in readers:
        r.start()
    try:
        for door, card in cards.items():
            building.present_card(door, card)
        assert wait_until(lambda: all(reads[d] for d in reads))
    finally:
        for r in readers:
            r.stop()
    for door, card in cards.items():
        assert reads[door][0].fields["id_number"] == card.id_number
    # The chip photo: a 102 x 126 JPEG portrait that still shows the face.
    assert reads["L101"][0].photo_format == "jpeg"
    chip = cv2.imdecode(np.frombuffer(reads["L101"][0].photo, np.uint8), cv2.IMREAD_COLOR)
    assert chip is not None and chip.shape == (126, 102, 3)
    assert len(dlib.get_frontal_face_detector()(cv2.resize(chip, (306, 378)), 1)) == 1


def test_show_face_places_one_linked_scene(building: Building) -> None:
    obama, group = face("examples/obama.jpg"), face("examples/two_people.jpg")
    folder = building.door("L101").camera_dir
    assert load_config(building.config_path).door("L101").camera == f"folder:{folder}"

    building.show_face("L101", obama)
    frame = FolderSource(folder, fps=None).read()
    expected = cv2.imread(str(obama))
    assert frame is not None and expected is not None and frame.shape == expected.shape
    assert (folder / "scene.jpg").is_symlink()  # a link, never a copy
    assert building.face("L101") == obama.resolve()

    building.show_face("L101", group)
    assert [p.name for p in folder.iterdir()] == ["scene.jpg"]
    assert building.face("L101") == group.resolve()
    assert building.face("L102") is None

    building.show_face("L101", None)
    assert list(folder.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        FolderSource(folder)  # nobody in front of the camera

    with pytest.raises(BuildingError, match="does not exist"):
        building.show_face("L101", folder / "missing.jpg")
    with pytest.raises(BuildingError, match="no door 'L999'"):
        building.show_face("L999", obama)


def test_config_overrides_validate(building: Building, tmp_path: Path) -> None:
    path = building.write_gateway_config(
        tmp_path / "other.toml",
        gateway_id="other-gw",
        keys_dir=tmp_path / "keys2",
        face={"threshold": 0.5},
        policy={"offline_grace_h": 1.0},
        doors={"unlock_seconds": 3},
        per_door={"L102": {"held_open_s": 5.0}},
    )
    config = load_config(path)
    assert config.gateway.id == "other-gw"
    assert config.face.threshold == 0.5 and config.policy.offline_grace_h == 1.0
    assert {d.unlock_seconds for d in config.doors} == {3}
    assert config.door("L102").held_open_s == 5.0 and config.door("L101").held_open_s == 30.0
    assert (config.link.host, config.link.port) == building.link_address
    assert config.link.port != building.broker_address[1]  # through the cuttable proxy
    assert load_platform_keys(config.keys.platform_keys).public_set["keys"]
    assert (
        load_platform_keys(tmp_path / "keys2" / "platform.jwks").public_set["keys"]
        == (load_platform_keys(building.platform_keys_path).public_set["keys"])
    )
    with pytest.raises(BuildingError, match="unknown doors"):
        building.write_gateway_config(tmp_path / "x.toml", per_door={"L9": {}})


def test_door_names() -> None:
    assert door_ids(3) == ["L101", "L102", "L103"]
    assert door_ids("A1") == ["A1"] and door_ids(["B1", "B2"]) == ["B1", "B2"]
    for bad in (0, 127, ["x", "x"], [], ["../x"]):
        with pytest.raises(ValueError):
            door_ids(bad)


# ------------------------------------------------------------- platform
def _gateway_client(
    address: tuple[str, int], gw: str, inbox: queue.Queue[bytes]
) -> tuple[mqtt.Client, threading.Event]:
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gw-{gw}", protocol=mqtt.MQTTv5)

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if not reason.is_failure:
            c.subscribe(f"lockgw/v1/{gw}/cmd", qos=1)

    def on_subscribe(*_a: Any) -> None:
        connected.set()  # only now will the broker route commands to us

    def on_disconnect(*_a: Any) -> None:
        connected.clear()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_subscribe = on_subscribe
    client.on_message = lambda _c, _u, msg: inbox.put(bytes(msg.payload))
    client.reconnect_delay_set(1, 1)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect_async(*address, keepalive=5, clean_start=False, properties=props)
    client.loop_start()
    return client, connected


def test_platform_talks_to_pinned_gateway_keys(building: Building) -> None:
    """A grant sealed by the platform opens with the gateway's keys; its events verify."""
    gw = building.gateway_id
    with pytest.raises(BuildingError, match="no pinned keys"):
        building.platform.ping()
    create_gateway_keys(building.gateway_keys_path)
    keys = load_gateway_keys(building.gateway_keys_path)
    building.pin_gateway_keys(keys.public_set)
    platform_keys = load_platform_keys(building.platform_keys_path)

    inbox: queue.Queue[bytes] = queue.Queue()
    client, connected = _gateway_client(building.link_address, gw, inbox)
    try:
        assert connected.wait(10)
        card = sample_card()
        cmd_id = building.platform.put_grant(
            "g-1", ["L101"], [guest_entry(card, "guest-1", face("examples/obama.jpg"))]
        )
        opened = open_sealed(inbox.get(timeout=10), keys.decryption, platform_keys.verify)
        assert opened.body["id"] == cmd_id and opened.body["type"] == "grant.put"
        guest = opened.body["body"]["guests"][0]
        assert guest["id_number"] == card.id_number
        assert guest["face_jpeg_b64"].startswith("/9j/")  # base64 of a JPEG

        env = {
            "v": 1,
            "id": "0f6b5d1e-8a3c-4f2e-9b7a-2c1d3e4f5a6b",
            "type": "door.opened",
            "gw": gw,
            "ts": "2026-01-01T00:00:00.000Z",
            "seq": 1,
            "body": {
                "lock": "L101",
                "method": ["id_card", "face"],
                "grant_id": "g-1",
                "at": "2026-01-01T00:00:00.000Z",
            },
        }
        text = seal(env, keys.signing, platform_keys.encryption)
        client.publish(f"lockgw/v1/{gw}/evt", text, qos=1)
        got = building.wait_for_event("door.opened", lambda b: b["lock"] == "L101", 10)
        assert got["seq"] == 1
        with pytest.raises(TimeoutError):
            building.wait_for_event("door.opened", timeout=0.5, after_seq=1)
    finally:
        client.disconnect()
        client.loop_stop()


# -------------------------------------------------------------- network
def drain_until(inbox: queue.Queue[bytes], wanted: bytes, timeout: float = 15.0) -> list[bytes]:
    """Messages taken from ``inbox`` up to and including ``wanted``."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while wanted not in got:
        got.append(inbox.get(timeout=max(0.1, deadline - time.monotonic())))
    return got


def test_network_cut_and_restore_with_a_plain_client(building: Building) -> None:
    """Cut: the gateway's connection drops and cannot come back; restore: it does,
    and what the platform published meanwhile arrives (the broker kept it)."""
    gw = "net-gw"
    inbox: queue.Queue[bytes] = queue.Queue()
    client, connected = _gateway_client(building.link_address, gw, inbox)
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv5)
    publisher.connect(*building.broker_address)
    publisher.loop_start()
    try:
        assert connected.wait(10)
        publisher.publish(f"lockgw/v1/{gw}/cmd", b"before", qos=1).wait_for_publish(5)
        assert inbox.get(timeout=10) == b"before"

        building.cut_network()
        assert wait_until(lambda: not connected.is_set(), 10)
        publisher.publish(f"lockgw/v1/{gw}/cmd", b"during", qos=1).wait_for_publish(5)
        proxy = building.proxy
        assert proxy is not None
        assert wait_until(lambda: proxy.refused >= 2, 15)  # reconnect attempts refused
        assert not connected.is_set() and inbox.empty()

        building.restore_network()
        assert connected.wait(15)
        # QoS 1 is at-least-once: "before" may come again if its PUBACK was cut off.
        assert b"during" in drain_until(inbox, b"during")

        # Blackhole: the connection stays up but nothing passes until restored.
        building.cut_network("blackhole")
        publisher.publish(f"lockgw/v1/{gw}/cmd", b"frozen", qos=1).wait_for_publish(5)
        with pytest.raises(queue.Empty):
            inbox.get(timeout=1.0)
        building.restore_network()
        assert drain_until(inbox, b"frozen")[-1] == b"frozen"
    finally:
        client.disconnect()
        client.loop_stop()
        publisher.disconnect()
        publisher.loop_stop()


def test_netcut_refuses_bad_mode_and_closes(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path) as broker, NetCut(broker.address) as proxy:
        assert accepts(*proxy.address)
        with pytest.raises(ValueError, match="cut mode"):
            proxy.cut("unplug")  # type: ignore[arg-type]
        assert not proxy.is_cut
    assert not accepts(*proxy.address)


# --------------------------------------------------------------- broker
def test_broker_kill9_and_restart_on_the_same_port(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path / "mq")
    broker.start()
    try:
        port = broker.port
        assert broker.running and accepts(*broker.address)
        assert f"listener {port} 127.0.0.1" in broker.conf_path.read_text()
        broker.kill9()
        assert not broker.running and not accepts(*broker.address)
        broker.start()
        assert broker.port == port and accepts(*broker.address)
    finally:
        broker.stop()
    assert not broker.running


def test_broker_missing_binary_and_busy_port(tmp_path: Path) -> None:
    missing = MosquittoBroker(tmp_path / "a", binary="/nonexistent/mosquitto")
    with pytest.raises(BrokerError, match="not installed"):
        missing.start()
    with MosquittoBroker(tmp_path / "b") as first:
        second = MosquittoBroker(tmp_path / "c", port=first.port)
        with pytest.raises(BrokerError, match="in use"):
            second.start(timeout=5)


# ------------------------------------------------------- control socket
def test_control_socket_drives_the_building(building: Building, tmp_path: Path) -> None:
    sock = building.control_socket_path
    assert sock.stat().st_mode & 0o077 == 0
    status = request(sock, "status")
    assert [d["id"] for d in status["doors"]] == ["L101", "L102", "L103"]

    assert request(sock, "open_door", door="L102") is None
    assert building.lock("L102").contact_open
    request(sock, "lock_power", door="L103", on=False)
    assert not building.lock("L103").powered
    request(sock, "tamper", door="L101", on=True)
    assert building.lock("L101").tamper
    request(sock, "show_face", door="L101", photo=str(face("examples/obama.jpg")))
    assert building.face("L101") is not None
    request(sock, "present_card", door="L102", name="王五", birth="19800229", sex="2")
    request(sock, "cut_network")
    assert building.network_cut
    request(sock, "restore_network")
    assert not building.network_cut

    # Bad requests: a clear error, counted, nothing done.
    server = building.control_server
    assert server is not None
    before = server.bad_requests
    with pytest.raises(CtlError, match="keypad input"):
        request(sock, "keypad", door="L101", digits="12a")
    with pytest.raises(CtlError, match="missing 'door'"):
        request(sock, "open_door")
    with pytest.raises(CtlError, match="unknown op"):
        request(sock, "explode", door="L101")
    with pytest.raises(CtlError, match="'on' has the wrong type"):
        request(sock, "lock_power", door="L101", on="yes")
    with pytest.raises(CtlError, match="no door"):
        request(sock, "close_door", door="L7")
    assert server.bad_requests == before + 5
    assert building.lock("L101").powered  # the refused power cut did nothing

    import socket as socket_mod

    with socket_mod.socket(socket_mod.AF_UNIX) as raw:
        raw.connect(str(sock))
        raw.sendall(b"not json\n")
        answer = json.loads(raw.makefile().readline())
    assert answer["ok"] is False

    # The command-line client: results on stdout, one error line and exit 1 on failure.
    assert ctl_main(["--dir", str(building.workdir), "close-door", "L102"]) == 0
    assert not building.lock("L102").contact_open
    assert ctl_main(["--dir", str(building.workdir), "keypad", "L101", "x"]) == 1
    assert ctl_main(["--dir", str(tmp_path / "nowhere"), "status"]) == 1
    with pytest.raises(CtlError, match=r"no door\.opened event"):
        request(sock, "wait_event", type="door.opened", timeout=0.2)
    args = ["--dir", str(building.workdir), "wait-event", "door.opened", "--timeout", "0.2"]
    assert ctl_main(args) == 1
    assert ctl_main(["--dir", str(building.workdir), "relay", "L101"]) == 0


def test_card_from_control_request_is_consistent(building: Building) -> None:
    """A card made from birth and sex alone carries a valid matching ID number."""
    request(building.control_socket_path, "present_card", door="L101", birth="19800229", sex="2")
    card = building.reader("L101")._card
    assert card is not None
    assert card.id_number == make_id_number(date(1980, 2, 29), "110101", 12, 2)


# --------------------------------------------------- standalone command
def test_standalone_command_runs_until_interrupted(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware_sim.building_ctl",
            "--doors",
            "2",
            "--dir",
            str(workdir),
            "--no-gateway-keys",
            "--set",
            "face.threshold=0.5",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "ready":
                break
        assert any(line.startswith("config: ") for line in lines), lines
        assert load_config(workdir / "gateway.toml").face.threshold == 0.5
        ctl = subprocess.run(
            [
                sys.executable,
                "-m",
                "firmware_sim.building_ctl",
                "ctl",
                "--dir",
                str(workdir),
                "power",
                "L102",
                "off",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert ctl.returncode == 0 and ctl.stdout.strip() == "ok"
        status = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "firmware_sim.building_ctl",
                    "ctl",
                    "--dir",
                    str(workdir),
                    "status",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                check=True,
            ).stdout
        )
        assert [d["powered"] for d in status["doors"]] == [True, False]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert not (workdir / "building.sock").exists()


# ------------------------------------------------------ secure channel
KEYSET_FALLBACK = (
    "import argparse, sys\n"
    "from agent.cli import locks\n"
    "p = argparse.ArgumentParser(prog='lockgw')\n"
    "locks.register(p.add_subparsers(dest='c', required=True))\n"
    "a = p.parse_args(sys.argv[1:])\n"
    "sys.exit(a.func(a))\n"
)


def _locks_cli() -> list[str]:
    exe = Path(sys.executable).with_name("lockgw")
    if exe.exists():
        probe = subprocess.run([str(exe), "locks", "--help"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return [str(exe)]
    return [sys.executable, "-c", KEYSET_FALLBACK]


def test_secure_channel_locks_keyed_by_the_real_cli(tmp_path: Path) -> None:
    from agent.devices.lockkeys import LockKeyStore

    workdir = tmp_path / "sc"
    with Building(1, workdir, secure_channel=True) as b:
        assert load_config(b.config_path).buses[0].secure_channel is True
        assert b.lock("L101").install_mode
        assert b.provision_lock_keys(_locks_cli()) == [1]
        stored = LockKeyStore.open(b.state_dir).get("bus0", 1)
        assert stored is not None and stored == b.lock("L101").scbk
    # The lock keeps its key across a restart of the building, and the driver
    # with the stored key gets a secure channel.
    with Building(1, workdir, secure_channel=True) as b:
        assert b.lock("L101").scbk == stored and not b.lock("L101").install_mode
        assert b.provision_lock_keys() == []  # nothing left to key
        with OsdpBus(str(b.bus_port), 115200, [LockSpec(1, stored)], lambda e: None) as bus:
            assert wait_until(lambda: bus.snapshot()[0].sc_active, 20)

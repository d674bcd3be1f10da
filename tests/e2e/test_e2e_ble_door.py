"""End to end over a BLE lock: the simulated building with one OSDP door and one door
whose lock is a simulated Nuki on the virtual radio (its own process, the gateway's
controller as HCI over TCP), paired by the real ``lockgw locks pair``, driven by the
real ``lockgw run``; the platform simulator checks what arrives and in which order."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from firmware_sim.site import SimulatedSite
from tests.support.e2e import GUEST_A, make_guest, needs_face_photos, present

pytestmark = needs_face_photos
OSDP_DOOR, BLE_DOOR = "L101", "L103"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedSite]:
    simulated = SimulatedSite(
        [OSDP_DOOR, BLE_DOOR],
        tmp_path_factory.mktemp("ble-site"),
        ble_doors=[BLE_DOOR],
        config_overrides={"doors": {"unlock_seconds": 2}, "alerts": {"brute_force_count": 50}},
    )
    simulated.start()
    yield simulated
    simulated.stop()


def ble_lock(site: SimulatedSite) -> dict[str, object]:
    status = site.gateway_status()
    return dict(status["locks"]["ble"][0])


def test_ble_lock_is_paired_sealed_and_online(site: SimulatedSite) -> None:
    building = site.building
    assert (building.state_dir / "ble-keys.json").exists()
    platform = building.platform
    platform.wait_for_event("lock.status", lambda b: b["lock"] == BLE_DOOR and b["online"])
    platform.wait_for_event("door.state", lambda b: b["lock"] == BLE_DOOR)
    lock = ble_lock(site)
    assert lock["paired"] and lock["online"] and lock["door"] == "closed"


def test_doctor_checks_the_controller_and_the_ble_lock(site: SimulatedSite) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli.main",
            "doctor",
            "--json",
            "--config",
            str(site.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["ble controller"]["status"] == "OK", checks["ble controller"]
    assert checks["ble credentials"]["status"] == "OK"
    assert checks[f"lock {BLE_DOOR}"]["status"] == "OK", checks[f"lock {BLE_DOOR}"]
    assert "online, door closed" in checks[f"lock {BLE_DOOR}"]["detail"]


def lockgw(site: SimulatedSite, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli.main", *argv, "--config", str(site.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_lists_ble_locks_and_refuses_to_pair_under_the_daemon(site: SimulatedSite) -> None:
    listed = lockgw(site, "locks", "list", "--ble", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["locks"]
    assert row["door_id"] == BLE_DOOR and row["paired"] and row["online"]
    refused = lockgw(site, "locks", "pair", BLE_DOOR)
    assert refused.returncode == 2 and "stop it to pair" in refused.stderr
    platform = site.building.platform
    mark = int(platform.last_seq)
    tested = lockgw(site, "locks", "test", BLE_DOOR, "--seconds", "1")
    assert tested.returncode == 0, tested.stderr
    opened = platform.wait_for_event("door.opened", lambda b: b["lock"] == BLE_DOOR, after_seq=mark)
    assert opened["body"]["remote"] == "technician test"
    assert site.building.wait_relay(BLE_DOOR, False, timeout=15), "relocked after the test"


def test_door_visit_over_ble_records_in_order(site: SimulatedSite) -> None:
    guest = make_guest(GUEST_A)
    platform = site.building.platform
    cmd = platform.put_grant("G-ble", [BLE_DOOR], [guest.entry()], room="103")
    assert platform.wait_ack(cmd)["status"] == "ok"
    assert site.wait_templates_ready(), "face templates not made within 20 s"
    mark = present(site, BLE_DOOR, guest.card, guest.live_photo)
    assert site.building.wait_relay(BLE_DOOR, True, timeout=15), "the BLE lock did not unlock"
    checkin = platform.wait_for_event(
        "checkin.verified", lambda b: b["guest_id"] == guest.guest_id, after_seq=mark
    )
    opened = platform.wait_for_event("door.opened", lambda b: b["lock"] == BLE_DOOR, after_seq=mark)
    assert opened["body"]["method"] == ["id_card", "face", "liveness"]
    assert checkin["seq"] < opened["seq"], "check-in recorded before the opening"
    site.building.open_door(BLE_DOOR)
    state_open = platform.wait_for_event(
        "door.state", lambda b: b["lock"] == BLE_DOOR and b["state"] == "open", after_seq=mark
    )
    site.building.close_door(BLE_DOOR)
    state_closed = platform.wait_for_event(
        "door.state",
        lambda b: b["lock"] == BLE_DOOR and b["state"] == "closed",
        after_seq=state_open["seq"],
    )
    assert opened["seq"] < state_open["seq"] < state_closed["seq"]
    assert site.building.wait_relay(BLE_DOOR, False, timeout=15), "the BLE lock did not relock"
    assert not [a for a in platform.received("alert.door_forced") if a["seq"] > mark], (
        "an opening we made is not forced"
    )


def test_forced_door_battery_and_range_alerts(site: SimulatedSite) -> None:
    building = site.building
    platform = building.platform
    assert building.ble is not None
    mark = int(platform.last_seq)
    building.open_door(BLE_DOOR)
    forced = platform.wait_for_event(
        "alert.door_forced", lambda b: b["lock"] == BLE_DOOR, after_seq=mark
    )
    building.close_door(BLE_DOOR)
    building.ble.request(op="battery", lock=0, percent=8)
    battery = platform.wait_for_event(
        "alert.lock_battery_critical", lambda b: b["lock"] == BLE_DOOR, after_seq=mark
    )
    assert battery["body"]["battery_percent"] == 8 and battery["seq"] > forced["seq"]
    building.ble.request(op="range", lock=0, **{"in": False})
    offline = platform.wait_for_event(
        "alert.lock_offline", lambda b: b["lock"] == BLE_DOOR, timeout=30, after_seq=mark
    )
    # A guest arrives while the lock is out of reach: the opening is recorded first, then
    # its failure; the door stays shut.
    guest = make_guest(GUEST_A)
    cmd = platform.put_grant("G-ble-away", [BLE_DOOR], [guest.entry()], room="103")
    assert platform.wait_ack(cmd)["status"] == "ok"
    visit = present(site, BLE_DOOR, guest.card, guest.live_photo)
    opened = platform.wait_for_event(
        "door.opened", lambda b: b["lock"] == BLE_DOOR, after_seq=visit
    )
    failed = platform.wait_for_event(
        "door.unlock_failed", lambda b: b["lock"] == BLE_DOOR, timeout=40, after_seq=visit
    )
    assert opened["seq"] < failed["seq"]
    assert not building.relay_unlocked(BLE_DOOR)
    building.ble.request(op="range", lock=0, **{"in": True})
    platform.wait_for_event(
        "lock.status",
        lambda b: b["lock"] == BLE_DOOR and b["online"],
        timeout=30,
        after_seq=offline["seq"],
    )

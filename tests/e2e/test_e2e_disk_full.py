"""End to end: the real ``lockgw run`` with its state directory on a small tmpfs that fills
up. Grants wait at the platform, doors stay locked and refusals are still recorded from
the reserve, the platform is told (``alert.gateway_incident`` ``disk_full``), ``lockgw
status`` says "disk full", and the gateway is back to normal by itself once space
returns, with nothing lost."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.polling import wait_until
from firmware_sim.site import SimulatedSite
from tests.support.disk import fill, small_tmpfs
from tests.support.e2e import (
    GUEST_A,
    GUEST_B,
    Guest,
    make_guest,
    needs_face_photos,
    present,
    stays_locked,
)

pytestmark = needs_face_photos
DOOR = "L101"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SimulatedSite]:
    workdir = tmp_path / "site"
    state = workdir / "building" / "state"  # the building's gateway state directory
    with small_tmpfs(state, "24m"):
        simulated = SimulatedSite(
            [DOOR], workdir, config_overrides={"doors": {"unlock_seconds": 1}}
        )
        try:
            simulated.start()
            yield simulated
        finally:
            simulated.stop()


def status_text(site: SimulatedSite) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "status", "--config", str(site.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_full_state_disk_keeps_doors_locked_records_refusals_and_recovers(
    site: SimulatedSite,
) -> None:
    platform = site.building.platform
    guest: Guest = make_guest(GUEST_A)
    put = platform.put_grant("G-disk", [DOOR], [guest.entry()])
    assert platform.wait_ack(put)["status"] == "ok"
    assert site.wait_templates_ready(), "face templates not made within 20 s"
    state = site.building.state_dir
    assert (state / "reserve.bin").exists()
    assert not site.gateway_status()["disk"]["full"]

    fill(state)
    # Grants with photos keep coming until one finds no room: it is not applied (the
    # platform sends it again later) and the reserve is released for what must be written.
    for n in range(60):
        platform.put_grant(f"G-fill-{n}", [DOOR], [make_guest(GUEST_B).entry()])
        if wait_until(lambda: site.gateway_status()["disk"]["full"], 1.0, 0.2):
            break
    assert site.gateway_status()["disk"]["full"], "the full disk was never noticed"
    assert "DISK FULL" in status_text(site)
    platform.wait_for_event(
        "alert.gateway_incident", lambda b: b["incident"] == "disk_full", timeout=30
    )
    # Nothing opens while the disk is full; the refusal is recorded from the reserve.
    mark = present(site, DOOR, guest.card, guest.live_photo)
    assert stays_locked(site, DOOR, 4.0), "a door opened while the disk was full"
    denied = platform.wait_for_event(
        "access.denied", lambda b: b["reason"] == "disk_full", after_seq=mark, timeout=20
    )
    assert denied["body"]["presented"] == "id_card"
    # A grant meanwhile waits at the platform: not applied, not answered.
    waiting = platform.put_grant("G-later", [DOOR], [make_guest(GUEST_B).entry()])
    with pytest.raises(TimeoutError):
        platform.wait_ack(waiting, timeout=3)

    # Space comes back: the reserve is taken again, all by itself.
    for filler in state.glob("filler*"):
        filler.unlink()
    assert wait_until(lambda: not site.gateway_status()["disk"]["full"], 30, 0.2), "no recovery"
    assert "DISK FULL" not in status_text(site)
    # The platform sends the grant again: applied now; and the guest gets in.
    again = platform.put_grant("G-later", [DOOR], [make_guest(GUEST_B).entry()])
    assert platform.wait_ack(again)["status"] == "ok"
    mark = present(site, DOOR, guest.card, guest.live_photo)
    assert site.building.wait_relay(DOOR, True, timeout=10), "the door did not open again"
    platform.wait_for_event("door.opened", lambda b: b["lock"] == DOOR, after_seq=mark)
    # Nothing lost: the outbox drains, and the platform holds every seq the gateway used.
    assert wait_until(lambda: site.gateway_status()["outbox"]["depth"] == 0, 30, 0.2)
    last = site.gateway_status()["outbox"]["last_seq"]
    assert set(range(1, last + 1)) <= {m["seq"] for m in platform.received()}

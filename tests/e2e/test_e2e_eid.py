"""End to end: check-in with the electronic ID (网证) in the simulated building against the
real ``lockgw run``: codes issued by the platform's identity-service stand-in, shown to a
door's QR scanner (a pty) or held up to its camera, verified through ``P/req`` and
``eid.result``, and the door deciding as for a card."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from firmware_sim.identity_service import SimIdentity
from firmware_sim.platform import new_okp
from firmware_sim.site import SimulatedSite
from tests.support.e2e import (
    GUEST_A,
    GUEST_B,
    Guest,
    make_guest,
    needs_face_photos,
    stays_locked,
)

pytestmark = needs_face_photos
CAMERA_DOOR, SCANNER_DOOR = "L101", "L102"
TIMEOUT_S = 2.0
# Names, ID numbers and codes used here: none may appear in the gateway's log.
PERSONAL: list[str] = []


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedSite]:
    simulated = SimulatedSite(
        [CAMERA_DOOR, SCANNER_DOOR],
        tmp_path_factory.mktemp("eid-site"),
        secure_channel=False,
        config_overrides={
            "doors": {"unlock_seconds": 2},
            "per_door": {CAMERA_DOOR: {"qr_camera": True}},
            "eid": {"answer_timeout_s": TIMEOUT_S},
            "alerts": {"brute_force_count": 50},
        },
    )
    simulated.start()
    yield simulated
    simulated.stop()


@pytest.fixture(autouse=True)
def normal_service(site: SimulatedSite) -> Iterator[None]:
    sim = site.building.platform.sim
    sim.identity.mode, sim.identity.delay_s, sim.answer_late = "normal", 0.0, False
    yield
    sim.identity.mode, sim.identity.delay_s, sim.answer_late = "normal", 0.0, False
    for door in (CAMERA_DOOR, SCANNER_DOOR):
        site.building.show_face(door, None)


def identity_of(guest: Guest) -> SimIdentity:
    card = guest.card
    PERSONAL.extend([card.name, card.id_number])
    return SimIdentity(
        name=card.name,
        sex=card.sex,  # type: ignore[arg-type]
        nation=card.nation,
        birth=card.birth,
        id_number=card.id_number,
        address=card.address,
    )


def guest_with_grant(site: SimulatedSite, grant_id: str, photos: Any = GUEST_A) -> Guest:
    guest = make_guest(photos)
    platform = site.building.platform
    cmd = platform.put_grant(grant_id, [CAMERA_DOOR, SCANNER_DOOR], [guest.entry()])
    assert platform.wait_ack(cmd)["status"] == "ok"
    assert site.wait_templates_ready(), "face templates not made within 20 s"
    return guest


def ready(site: SimulatedSite, door: str, face: Any) -> int:
    """The guest stands at ``door`` once it has relocked; the platform's seq mark."""
    site.building.show_face(door, face)
    assert site.building.wait_relay(door, False, timeout=30)
    return int(site.building.platform.last_seq)


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def eid_counters(site: SimulatedSite) -> dict[str, Any]:
    return dict(site.gateway_status()["eid"])


def assert_checked_in(site: SimulatedSite, door: str, guest: Guest, mark: int) -> None:
    platform = site.building.platform
    assert site.building.wait_relay(door, True, timeout=10), "the door did not unlock"
    request = platform.wait_for_event("eid.verify", lambda b: b["lock"] == door, after_seq=mark)
    checkin = platform.wait_for_event(
        "checkin.verified", lambda b: b["guest_id"] == guest.guest_id, after_seq=mark
    )
    opened = platform.wait_for_event("door.opened", lambda b: b["lock"] == door, after_seq=mark)
    assert request["seq"] < checkin["seq"] < opened["seq"], "request, registration, opening"
    body, card = checkin["body"], guest.card
    assert body["card_type"] == "eid"
    assert (body["name"], body["id_number"], body["birth"], body["sex"]) == (
        card.name,
        card.id_number,
        card.birth,
        card.sex,
    )
    assert "card_photo_b64" not in body and body["eid_request_id"] == request["body"]["request_id"]
    assert body["face_distance"] <= body["face_threshold"] and body["live_jpeg_b64"]
    assert opened["body"]["method"] == ["eid", "face", "liveness"]
    assert request["body"]["live_jpeg_b64"], "the live face goes with the request"
    wait = ts(request["body"]["answer_by"]) - ts(request["body"]["at"])
    assert wait == pytest.approx(TIMEOUT_S, abs=0.002)


def test_checkin_with_the_code_at_the_serial_scanner(site: SimulatedSite) -> None:
    guest = guest_with_grant(site, "G-eid-scan")
    code = site.building.platform.sim.identity.issue(identity_of(guest))
    PERSONAL.append(code)
    mark = ready(site, SCANNER_DOOR, guest.live_photo)
    site.building.scan_code(SCANNER_DOOR, code)
    assert_checked_in(site, SCANNER_DOOR, guest, mark)
    request = site.building.platform.received("eid.verify")[-1]["body"]
    assert request["code"] == code, "the code goes exactly as scanned"


def test_checkin_with_the_code_held_up_to_the_camera_is_sent_once(site: SimulatedSite) -> None:
    guest = guest_with_grant(site, "G-eid-cam")
    sim = site.building.platform.sim
    code = sim.identity.issue(identity_of(guest))
    mark = ready(site, CAMERA_DOOR, guest.live_photo)
    before = len(sim.eid_requests)
    site.building.show_code(CAMERA_DOOR, code, guest.live_photo)  # type: ignore[arg-type]
    assert_checked_in(site, CAMERA_DOOR, guest, mark)
    # The phone stays in view while the door relocks: the code is not sent again.
    assert site.building.wait_relay(CAMERA_DOOR, False, timeout=10)
    time.sleep(1.0)
    assert len(sim.eid_requests) == before + 1
    assert site.gateway_status()["doors"]["eid_repeated_code"] >= 1


def test_an_expired_code_is_refused_eid_failed(site: SimulatedSite) -> None:
    guest = guest_with_grant(site, "G-eid-expired")
    code = site.building.platform.sim.identity.issue(identity_of(guest), lifetime_s=-1)
    mark = ready(site, SCANNER_DOOR, guest.live_photo)
    site.building.scan_code(SCANNER_DOOR, code)
    denied = site.building.platform.wait_for_event(
        "access.denied", lambda b: b["lock"] == SCANNER_DOOR, after_seq=mark
    )["body"]
    assert (denied["reason"], denied["error"], denied["presented"]) == (
        "eid_failed",
        "code_expired",
        "eid",
    )
    assert stays_locked(site, SCANNER_DOOR, 1.0)
    assert not any(
        e["body"]["guest_id"] == guest.guest_id
        for e in site.building.platform.received("checkin.verified")
    )


def test_a_code_already_used_is_refused_eid_failed(site: SimulatedSite) -> None:
    guest = guest_with_grant(site, "G-eid-reused")
    service = site.building.platform.sim.identity
    code = service.issue(identity_of(guest))
    assert service.verify(code, "").status == "failed"  # used up elsewhere (a screenshot)
    mark = ready(site, SCANNER_DOOR, guest.live_photo)
    site.building.scan_code(SCANNER_DOOR, code)
    denied = site.building.platform.wait_for_event(
        "access.denied", lambda b: b["lock"] == SCANNER_DOOR, after_seq=mark
    )["body"]
    assert (denied["reason"], denied["error"]) == ("eid_failed", "code_used")
    assert stays_locked(site, SCANNER_DOOR, 1.0)


def test_a_slow_platform_is_refused_in_time_and_its_late_result_ignored(
    site: SimulatedSite,
) -> None:
    guest = guest_with_grant(site, "G-eid-slow")
    sim = site.building.platform.sim
    sim.identity.mode, sim.identity.delay_s, sim.answer_late = "slow", TIMEOUT_S + 0.8, True
    code = sim.identity.issue(identity_of(guest))
    late_before = eid_counters(site)["results_late"]
    mark = ready(site, SCANNER_DOOR, guest.live_photo)
    site.building.scan_code(SCANNER_DOOR, code)
    platform = site.building.platform
    request = platform.wait_for_event("eid.verify", after_seq=mark)["body"]
    denied = platform.wait_for_event(
        "access.denied", lambda b: b["lock"] == SCANNER_DOOR, after_seq=mark
    )["body"]
    assert denied["reason"] == "eid_unavailable"
    assert denied["eid_request_id"] == request["request_id"]
    assert ts(denied["at"]) - ts(request["at"]) <= TIMEOUT_S + 0.1
    # The result comes after answer_by: verified, signed, sealed, and ignored.
    assert sim.wait_for(
        lambda: any(r["request_id"] == request["request_id"] for r in sim.eid_results), 5
    )
    assert stays_locked(site, SCANNER_DOOR, 1.5)
    assert eid_counters(site)["results_late"] == late_before + 1
    assert not any(
        e["body"].get("grant_id") == "G-eid-slow" for e in platform.received("door.opened")
    )
    assert not any(
        e["body"]["guest_id"] == guest.guest_id for e in platform.received("checkin.verified")
    )


def test_a_guest_waiting_on_the_platform_holds_up_no_other_door(site: SimulatedSite) -> None:
    waiting = guest_with_grant(site, "G-eid-wait")
    carded = guest_with_grant(site, "G-eid-card")
    building = site.building
    sim = building.platform.sim
    sim.identity.mode = "unreachable"
    code = sim.identity.issue(identity_of(waiting))
    mark = ready(site, SCANNER_DOOR, waiting.live_photo)
    ready(site, CAMERA_DOOR, carded.live_photo)
    building.remove_card(CAMERA_DOOR)
    time.sleep(0.8)  # the reader sees no card: the next touch is a new presentation
    building.scan_code(SCANNER_DOOR, code)
    building.platform.wait_for_event("eid.verify", after_seq=mark)
    started = time.monotonic()
    building.present_card(CAMERA_DOOR, carded.card)
    assert building.wait_relay(CAMERA_DOOR, True, timeout=TIMEOUT_S), "the card door waited"
    assert time.monotonic() - started < TIMEOUT_S
    assert not building.relay_unlocked(SCANNER_DOOR)
    denied = building.platform.wait_for_event(
        "access.denied", lambda b: b["lock"] == SCANNER_DOOR, after_seq=mark
    )["body"]
    assert denied["reason"] == "eid_unavailable"
    building.remove_card(CAMERA_DOOR)


def test_a_cut_link_is_refused_in_time(site: SimulatedSite) -> None:
    guest = guest_with_grant(site, "G-eid-cut")
    building = site.building
    code = building.platform.sim.identity.issue(identity_of(guest))
    mark = ready(site, SCANNER_DOOR, guest.live_photo)
    building.cut_network("blackhole")  # the gateway still thinks it is connected
    try:
        started = time.monotonic()
        building.scan_code(SCANNER_DOOR, code)
        assert stays_locked(site, SCANNER_DOOR, TIMEOUT_S + 1.0)
        assert time.monotonic() - started >= TIMEOUT_S
    finally:
        building.restore_network()
    platform = building.platform
    request = platform.wait_for_event("eid.verify", after_seq=mark, timeout=60)["body"]
    denied = platform.wait_for_event(
        "access.denied", lambda b: b["lock"] == SCANNER_DOOR, after_seq=mark, timeout=60
    )["body"]
    assert denied["reason"] == "eid_unavailable"
    assert ts(denied["at"]) - ts(request["at"]) <= TIMEOUT_S + 0.1
    assert stays_locked(site, SCANNER_DOOR, 1.0)


def test_without_a_link_the_door_refuses_at_once(site: SimulatedSite) -> None:
    guest = guest_with_grant(site, "G-eid-nolink")
    building = site.building
    code = building.platform.sim.identity.issue(identity_of(guest))
    mark = ready(site, SCANNER_DOOR, guest.live_photo)
    building.cut_network("reset")
    try:
        deadline = time.monotonic() + 30
        while site.gateway_status()["link"]["connected"]:
            assert time.monotonic() < deadline, "the gateway did not notice the cut"
            time.sleep(0.1)
        building.scan_code(SCANNER_DOOR, code)
        deadline = time.monotonic() + 5
        while site.gateway_status()["doors"].get("eid_no_link", 0) < 1:
            assert time.monotonic() < deadline, "the code was not refused"
            time.sleep(0.05)
        assert stays_locked(site, SCANNER_DOOR, 0.5)
    finally:
        building.restore_network()
    denied = building.platform.wait_for_event(
        "access.denied", lambda b: b["lock"] == SCANNER_DOOR, after_seq=mark, timeout=60
    )["body"]
    assert (denied["reason"], denied["error"]) == ("eid_unavailable", "no link")
    assert not [e for e in building.platform.received("eid.verify") if e["seq"] > mark]


def test_forged_results_open_nothing(site: SimulatedSite) -> None:
    guest = guest_with_grant(site, "G-eid-forged", GUEST_B)
    sim = site.building.platform.sim
    gw = site.building.gateway_id
    sim.identity.mode = "unreachable"  # the real answer never comes
    code = sim.identity.issue(identity_of(guest))
    before = eid_counters(site)
    mark = ready(site, SCANNER_DOOR, guest.live_photo)
    site.building.scan_code(SCANNER_DOOR, code)
    request = site.building.platform.wait_for_event("eid.verify", after_seq=mark)["body"]
    verified = {
        "request_id": request["request_id"],
        "status": "verified",
        "identity": identity_of(guest).as_body(),
    }
    # Signed by a key the gateway does not pin; for another gateway; for a request never made.
    sim.publish_raw(gw, sim.build(gw, "eid.result", verified, sig=new_okp("Ed25519"))[1].encode())
    sim.publish_raw(
        gw, sim.build(gw, "eid.result", verified, envelope_gw="other-gw-02")[1].encode()
    )
    sim.send(gw, "eid.result", verified | {"request_id": "f0f0f0f0-0000-4000-8000-000000000000"})
    denied = site.building.platform.wait_for_event(
        "access.denied", lambda b: b["lock"] == SCANNER_DOOR, after_seq=mark
    )["body"]
    assert denied["reason"] == "eid_unavailable"
    assert stays_locked(site, SCANNER_DOOR, 1.0)
    after = eid_counters(site)
    assert after["results_unknown"] == before["results_unknown"] + 1
    assert after["results_matched"] == before["results_matched"]
    assert (
        after["commands"].get("dropped_eid_wrong_gw", 0)
        == before["commands"].get("dropped_eid_wrong_gw", 0) + 1
    )
    # None of the forged results was answered.
    assert not site.building.platform.received("ack") or all(
        a["body"]["cmd_id"] != request["request_id"] for a in site.building.platform.received("ack")
    )


def test_no_name_number_or_code_in_the_gateway_log(site: SimulatedSite) -> None:
    text = site.log_path.read_text(encoding="utf-8", errors="replace")
    assert "eid" in text  # the visits above were logged ...
    leaked = [p for p in PERSONAL if p and p in text]
    assert not leaked, "personal data or a code in the gateway log"

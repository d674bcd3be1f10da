"""End to end: the simulated building (OSDP locks with secure channel, ID readers, cameras,
Mosquitto, the platform simulator) against the real ``lockgw run``: each step of the demo's
day, checking what the lock did and what the platform received, opened and verified."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.idcards import sample_card
from firmware_sim.site import SimulatedSite
from tests.support.e2e import (
    GUEST_A,
    GUEST_B,
    PRINTED_A,
    STRANGER,
    TWO_PEOPLE,
    Guest,
    make_guest,
    needs_face_photos,
    present,
    stays_locked,
)

pytestmark = needs_face_photos
DOOR, GATE = "L101", "L102"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedSite]:
    workdir = tmp_path_factory.mktemp("site")
    simulated = SimulatedSite(
        [DOOR, GATE],
        workdir,
        config_overrides={
            "doors": {"unlock_seconds": 2},
            "policy": {"pin_max_attempts": 3},
            "alerts": {"brute_force_count": 50},
        },
    )
    simulated.start()
    yield simulated
    simulated.stop()


def grant(site: SimulatedSite, grant_id: str, guests: list[Guest], **kw: object) -> None:
    platform = site.building.platform
    cmd = platform.put_grant(grant_id, [DOOR, GATE], [g.entry() for g in guests], **kw)
    assert platform.wait_ack(cmd)["status"] == "ok"
    # Grants arrive ahead of guests: the guests come once their templates are made.
    assert site.wait_templates_ready(), "face templates not made within 20 s"


def test_grant_is_acknowledged_and_held(site: SimulatedSite) -> None:
    guest = make_guest(GUEST_A)
    grant(site, "G-held", [guest])
    status = site.gateway_status()
    assert status["grants"]["stored"] >= 1
    assert status["grants"]["active"] >= 1


def test_checkin_with_card_and_face_opens_and_registers(site: SimulatedSite) -> None:
    guest = make_guest(GUEST_A)
    grant(site, "G-checkin", [guest], room="101")
    mark = present(site, DOOR, guest.card, guest.live_photo)
    assert site.building.wait_relay(DOOR, True, timeout=10), "the door did not unlock"
    platform = site.building.platform
    checkin = platform.wait_for_event(
        "checkin.verified", lambda b: b["guest_id"] == guest.guest_id, after_seq=mark
    )["body"]
    card = guest.card
    assert (checkin["name"], checkin["id_number"], checkin["birth"]) == (
        card.name,
        card.id_number,
        card.birth,
    )
    assert checkin["address"] == card.address and checkin["issuer"] == card.issuer
    assert checkin["valid_until"] == card.valid_until and checkin["card_photo_format"] == "jpeg"
    assert checkin["face_distance"] <= checkin["face_threshold"]
    assert checkin["live_jpeg_b64"] and checkin["grant_id"] == "G-checkin"
    # Presentation-attack detection by default: the fused live score is in the record.
    liveness = checkin["liveness"]
    assert liveness["mode"] == "pad" and liveness["passed"] is True
    assert liveness["score"] >= liveness["threshold"] == 0.5
    opened = platform.wait_for_event("door.opened", lambda b: b["lock"] == DOOR, after_seq=mark)
    assert opened["body"]["method"] == ["id_card", "face", "liveness"]
    assert opened["seq"] > checkin_seq(platform, guest.guest_id), "check-in recorded first"


def checkin_seq(platform: object, guest_id: str) -> int:
    events = platform.received("checkin.verified")  # type: ignore[attr-defined]
    return int(next(e["seq"] for e in events if e["body"]["guest_id"] == guest_id))


def test_second_guest_of_the_booking_checks_in_too(site: SimulatedSite) -> None:
    first, second = make_guest(GUEST_A), make_guest(GUEST_B)
    grant(site, "G-pair", [first, second])
    for guest in (first, second):
        mark = present(site, DOOR, guest.card, guest.live_photo)
        assert site.building.wait_relay(DOOR, True, timeout=10)
        site.building.platform.wait_for_event(
            "checkin.verified", lambda b, g=guest: b["guest_id"] == g.guest_id, after_seq=mark
        )


def test_reentry_sends_no_second_checkin(site: SimulatedSite) -> None:
    guest = make_guest(GUEST_B)
    grant(site, "G-reentry", [guest])
    present(site, GATE, guest.card, guest.live_photo)
    assert site.building.wait_relay(GATE, True, timeout=10)
    mark = present(site, GATE, guest.card, guest.live_photo)
    assert site.building.wait_relay(GATE, True, timeout=10)
    platform = site.building.platform
    platform.wait_for_event("door.opened", lambda b: b["lock"] == GATE, after_seq=mark)
    again = [
        e
        for e in platform.received("checkin.verified")
        if e["seq"] > mark and e["body"]["guest_id"] == guest.guest_id
    ]
    assert again == []


def test_stranger_with_a_guests_card_is_refused_and_reported(site: SimulatedSite) -> None:
    guest = make_guest(GUEST_A)
    grant(site, "G-stranger", [guest])
    mark = present(site, DOOR, guest.card, STRANGER)
    platform = site.building.platform
    alert = platform.wait_for_event("alert.identity_mismatch", after_seq=mark)["body"]
    assert alert["grant_id"] == "G-stranger" and alert["face_distance"] > alert["face_threshold"]
    denied = platform.wait_for_event("access.denied", after_seq=mark)["body"]
    assert denied["reason"] == "face_mismatch"
    assert (
        denied["id_number_masked"] == guest.card.id_number[:6] + "*" * 8 + guest.card.id_number[-4:]
    )
    assert stays_locked(site, DOOR)


def test_printed_photo_of_the_guest_is_refused_and_the_guest_opens(site: SimulatedSite) -> None:
    """A printed photo of the guest in the grant (NUAA attack frame) matches the guest's face;
    the default configuration refuses it as no live person. The guest in person opens."""
    guest = make_guest(GUEST_A)
    grant(site, "G-printed", [guest])
    mark = present(site, DOOR, guest.card, PRINTED_A)
    platform = site.building.platform
    denied = platform.wait_for_event("access.denied", after_seq=mark)["body"]
    assert denied["reason"] == "liveness_failed"
    assert stays_locked(site, DOOR)
    mark = present(site, DOOR, guest.card, guest.live_photo)
    assert site.building.wait_relay(DOOR, True, timeout=10), "the live guest did not get in"
    platform.wait_for_event(
        "checkin.verified", lambda b: b["guest_id"] == guest.guest_id, after_seq=mark
    )


def test_a_grant_saying_liveness_off_does_not_lower_the_sites(site: SimulatedSite) -> None:
    guest = make_guest(GUEST_A)
    grant(site, "G-lax", [guest], policy={"liveness": "off"})
    mark = present(site, DOOR, guest.card, PRINTED_A)
    denied = site.building.platform.wait_for_event("access.denied", after_seq=mark)["body"]
    assert denied["reason"] == "liveness_failed"
    assert stays_locked(site, DOOR)


def test_a_card_with_the_guests_number_and_another_name_is_refused(site: SimulatedSite) -> None:
    guest = make_guest(GUEST_A)
    grant(site, "G-forged", [guest])
    forged = sample_card(
        name="冒名顶替",
        sex=guest.card.sex,
        birth=guest.card.birth,
        id_number=guest.card.id_number,
    )
    mark = present(site, DOOR, forged, guest.live_photo)
    platform = site.building.platform
    alert = platform.wait_for_event("alert.identity_mismatch", after_seq=mark)["body"]
    assert alert["mismatch"] == "name" and alert["grant_id"] == "G-forged"
    assert alert["card_name_masked"] == ["冒**替"]
    denied = platform.wait_for_event("access.denied", after_seq=mark)["body"]
    assert denied["reason"] == "name_mismatch"
    assert stays_locked(site, DOOR)
    log = site.log_path.read_text(encoding="utf-8")
    assert "冒名顶替" not in log and guest.card.name not in log


def test_card_never_granted_is_refused_and_reported_when_repeated(site: SimulatedSite) -> None:
    nobody = make_guest(None)
    for _ in range(3):
        mark = present(site, GATE, nobody.card, None)
        denied = site.building.platform.wait_for_event("access.denied", after_seq=mark)["body"]
        assert denied["reason"] == "no_grant"
        assert stays_locked(site, GATE, 1.0)
    alert = site.building.platform.wait_for_event("alert.unknown_card", after_seq=mark)["body"]
    assert alert["presentations"] == 3


def test_forced_door_raises_the_alert(site: SimulatedSite) -> None:
    building = site.building
    building.wait_relay(GATE, False, timeout=30)
    mark = building.platform.last_seq
    building.open_door(GATE)
    try:
        building.platform.wait_for_event(
            "alert.door_forced", lambda b: b["lock"] == GATE, after_seq=mark
        )
        state = building.platform.wait_for_event(
            "door.state", lambda b: b["lock"] == GATE, after_seq=mark
        )
        assert state["body"]["state"] == "forced"
    finally:
        building.close_door(GATE)


def test_offline_entry_is_recorded_and_arrives_after_the_network_returns(
    site: SimulatedSite,
) -> None:
    guest = make_guest(GUEST_A)
    grant(site, "G-offline", [guest])
    building = site.building
    building.cut_network()
    try:
        mark = present(site, GATE, guest.card, guest.live_photo)
        assert building.wait_relay(GATE, True, timeout=10), "offline, the door must still open"
        time.sleep(1.0)
        assert not [e for e in building.platform.received() if e["seq"] > mark]
    finally:
        building.restore_network()
    building.platform.wait_for_event(
        "checkin.verified", lambda b: b["guest_id"] == guest.guest_id, timeout=40, after_seq=mark
    )
    building.platform.wait_for_event(
        "door.opened", lambda b: b["lock"] == GATE, timeout=40, after_seq=mark
    )


def test_revoked_grant_no_longer_opens(site: SimulatedSite) -> None:
    guest = make_guest(GUEST_B)
    grant(site, "G-revoke", [guest])
    platform = site.building.platform
    assert platform.wait_ack(platform.revoke("G-revoke"))["status"] == "ok"
    mark = present(site, DOOR, guest.card, guest.live_photo)
    assert platform.wait_for_event("access.denied", after_seq=mark)["body"]["reason"] == "no_grant"
    assert stays_locked(site, DOOR)


def test_pin_reentry_and_lockout_after_wrong_pins(site: SimulatedSite) -> None:
    guest = make_guest(GUEST_A)
    grant(site, "G-pin", [guest], pin="482916")
    building = site.building
    present(site, DOOR, guest.card, guest.live_photo)
    assert building.wait_relay(DOOR, True, timeout=10)
    building.remove_card(DOOR)
    building.wait_relay(DOOR, False, timeout=30)
    mark = building.platform.last_seq
    building.keypad(DOOR, "482916#")
    assert building.wait_relay(DOOR, True, timeout=10), "the right PIN re-enters"
    opened = building.platform.wait_for_event("door.opened", after_seq=mark)["body"]
    assert opened["method"] == ["pin"]
    building.wait_relay(DOOR, False, timeout=30)
    mark = building.platform.last_seq
    for _ in range(3):
        building.keypad(DOOR, "000000#")
        time.sleep(0.5)
    building.keypad(DOOR, "482916#")
    assert stays_locked(site, DOOR), "during the lockout even the right PIN is refused"
    locked = building.platform.wait_for_event(
        "access.denied", lambda b: b["reason"] == "pin_locked_out", after_seq=mark
    )["body"]
    assert locked["presented"] == "pin"
    wrong = [
        m["body"]["reason"]
        for m in building.platform.received("access.denied")
        if m["seq"] > mark and m["body"]["reason"] == "pin_wrong"
    ]
    assert len(wrong) == 3


def test_remote_unlock_is_recorded_then_carried_out(site: SimulatedSite) -> None:
    building = site.building
    building.wait_relay(GATE, False, timeout=30)
    mark = building.platform.last_seq
    cmd = building.platform.remote_unlock(GATE, seconds=2, reason="host lets the cleaner in")
    assert building.platform.wait_ack(cmd)["status"] == "ok"
    assert building.wait_relay(GATE, True, timeout=10)
    opened = building.platform.wait_for_event("door.opened", after_seq=mark)["body"]
    assert opened["method"] == ["remote"] and opened["remote"] == "host lets the cleaner in"


def test_two_people_entering_on_one_verification_raise_unregistered_occupant(
    site: SimulatedSite,
) -> None:
    guest = make_guest(GUEST_A)
    grant(site, "G-tailgate", [guest])
    building = site.building
    mark = present(site, DOOR, guest.card, guest.live_photo)
    assert building.wait_relay(DOOR, True, timeout=10)
    building.show_face(DOOR, TWO_PEOPLE)  # while the door is open, two people pass
    alert = building.platform.wait_for_event(
        "alert.unregistered_occupant", lambda b: b["lock"] == DOOR, timeout=30, after_seq=mark
    )["body"]
    assert alert["faces_counted"] >= 2 and alert["guests_verified"] == 1


def test_no_personal_data_in_plaintext_on_the_gateways_disk(site: SimulatedSite) -> None:
    # Runs last: every earlier test's guests have passed through the gateway.
    guests = [make_guest(GUEST_A)]
    grant(site, "G-privacy", guests)
    present(site, DOOR, guests[0].card, guests[0].live_photo)
    assert site.building.wait_relay(DOOR, True, timeout=10)
    secrets = [guests[0].card.name, guests[0].card.id_number, "310104"]
    files = [site.log_path, *Path(site.building.state_dir).rglob("*")]
    for path in files:
        if path.is_file():
            data = path.read_bytes()
            for secret in secrets[:2]:
                assert secret.encode() not in data, f"{secret!r} in plaintext in {path.name}"
                assert secret.encode("utf-16-le") not in data

"""The door decision, branch by branch (a pure function: no devices needed)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.door.decision import (
    SAY_FACE_NOT_RECOGNISED,
    SAY_NOT_AUTHORISED,
    SAY_SEE_HOST,
    DoorHistory,
    FaceOutcome,
    Presentation,
    SitePolicy,
    decide,
)
from agent.grants.model import GrantPolicy, VerifiedGuest

NOW = 1_800_000_000.0
ID = "11010519491231002X"
GUEST = VerifiedGuest(
    grant_id="g1",
    guest_id="p1",
    room="101",
    locks=("L101", "GATE"),
    valid_from=NOW - 3600,
    valid_until=NOW + 86400,
    policy=GrantPolicy(),
    has_photo=True,
    checked_in_at=None,
    template_status="ok",
    id_number=ID,
    name="张三",
    pin="246810",
)
MATCH = FaceOutcome(True, 0.31, 0.45, "match", liveness_passed=True)
MISMATCH = FaceOutcome(False, 0.72, 0.45, "no_match")
POLICY = SitePolicy()
FRESH = NOW - 60  # last contact with the platform


def card(face: FaceOutcome | None = None, lock: str = "L101", **kw: object) -> Presentation:
    return Presentation(lock=lock, kind="card", id_number=ID, face=face, **kw)  # type: ignore[arg-type]


def test_first_entry_needs_the_face_then_opens_with_card_and_face() -> None:
    first = decide(card(), [GUEST], DoorHistory(), POLICY, NOW, FRESH)
    assert not first.granted and first.needs_face and first.guest == GUEST
    final = decide(card(MATCH), [GUEST], DoorHistory(), POLICY, NOW, FRESH)
    assert final.granted and final.first_entry
    assert final.factors == ("id_card", "face", "liveness")  # PAD by default


def test_face_of_someone_else_is_refused_as_mismatch() -> None:
    d = decide(card(MISMATCH), [GUEST], DoorHistory(), POLICY, NOW, FRESH)
    assert not d.granted
    assert d.reason == "face_mismatch"
    assert d.say == SAY_FACE_NOT_RECOGNISED


@pytest.mark.parametrize(
    ("candidates", "now", "reason"),
    [
        ([], NOW, "no_grant"),
        ([replace(GUEST, locks=("L999",))], NOW, "grant_not_for_this_lock"),
        ([GUEST], NOW + 86400, "grant_expired"),
        ([GUEST], NOW - 7200, "grant_not_yet_valid"),
    ],
)
def test_refusals_say_only_not_authorised(
    candidates: list[VerifiedGuest], now: float, reason: str
) -> None:
    d = decide(card(MATCH), candidates, DoorHistory(), POLICY, now, now - 60)
    assert not d.granted
    assert d.reason == reason
    assert d.say == SAY_NOT_AUTHORISED


def test_invalid_card_is_refused_before_anything_else() -> None:
    d = decide(card(MATCH, card_problem="expired"), [GUEST], DoorHistory(), POLICY, NOW, FRESH)
    assert not d.granted and d.reason == "card_invalid:expired" and d.say == SAY_SEE_HOST


def test_offline_too_long_refuses_even_a_valid_guest() -> None:
    policy = SitePolicy(offline_grace_s=3600)
    d = decide(card(MATCH), [GUEST], DoorHistory(), policy, NOW, NOW - 3601)
    assert not d.granted and d.reason == "offline_too_long"
    assert decide(card(MATCH), [GUEST], DoorHistory(), policy, NOW, None).reason == (
        "offline_too_long"
    )


def test_reentry_by_card_alone_only_where_the_site_allows() -> None:
    back = replace(GUEST, checked_in_at=NOW - 600)
    strict = decide(card(), [back], DoorHistory(), POLICY, NOW, FRESH)
    assert strict.needs_face
    relaxed = decide(
        card(), [back], DoorHistory(), SitePolicy(reentry_requires_face=False), NOW, FRESH
    )
    assert relaxed.granted and relaxed.factors == ("id_card",)
    first = decide(
        card(), [GUEST], DoorHistory(), SitePolicy(reentry_requires_face=False), NOW, FRESH
    )
    assert first.needs_face, "the first entry always needs the face"


def test_liveness_from_site_or_grant_policy() -> None:
    blink_site = SitePolicy(liveness="blink")
    assert decide(card(), [GUEST], DoorHistory(), blink_site, NOW, FRESH).liveness == "blink"
    no_blink = replace(MATCH, liveness_passed=False)
    d = decide(card(no_blink), [GUEST], DoorHistory(), blink_site, NOW, FRESH)
    assert not d.granted and d.reason == "liveness_failed"
    ok = decide(
        card(replace(MATCH, liveness_passed=True)), [GUEST], DoorHistory(), blink_site, NOW, FRESH
    )
    assert ok.granted and "liveness" in ok.factors
    per_grant = replace(GUEST, policy=GrantPolicy(liveness="blink"))
    off_site = SitePolicy(liveness="off")
    assert decide(card(), [per_grant], DoorHistory(), off_site, NOW, FRESH).liveness == "blink"


def test_presentation_attack_detection_is_the_default() -> None:
    assert POLICY.liveness == "pad"
    assert decide(card(), [GUEST], DoorHistory(), POLICY, NOW, FRESH).liveness == "pad"
    unchecked = replace(MATCH, liveness_passed=None)
    d = decide(card(unchecked), [GUEST], DoorHistory(), POLICY, NOW, FRESH)
    assert not d.granted and d.reason == "liveness_failed"
    # A printed photo of somebody else: refused as a picture, not as a stranger.
    photo = replace(MISMATCH, liveness_passed=False)
    d = decide(card(photo), [GUEST], DoorHistory(), POLICY, NOW, FRESH)
    assert not d.granted and d.reason == "liveness_failed" and d.say == SAY_FACE_NOT_RECOGNISED


@pytest.mark.parametrize(
    ("site", "grant", "required"),
    [
        ("pad", "off", "pad"),  # a grant saying off does not lower the site's floor
        ("pad", None, "pad"),
        ("pad", "blink", "pad+blink"),
        ("pad+blink", "off", "pad+blink"),
        ("pad+blink", "pad", "pad+blink"),
        ("blink", "pad", "pad+blink"),
        ("off", "off", "off"),
        ("off", "pad", "pad"),
    ],
)
def test_site_liveness_is_a_floor(site: str, grant: str | None, required: str) -> None:
    guest = replace(GUEST, policy=GrantPolicy(liveness=grant))  # type: ignore[arg-type]
    policy = SitePolicy(liveness=site)  # type: ignore[arg-type]
    assert decide(card(), [guest], DoorHistory(), policy, NOW, FRESH).liveness == required


def test_replayed_reference_is_refused_as_such() -> None:
    replay = FaceOutcome(False, 0.01, 0.5, "replayed_reference", liveness_passed=True)
    d = decide(card(replay), [GUEST], DoorHistory(), POLICY, NOW, FRESH)
    assert not d.granted and d.reason == "replayed_reference"


@pytest.mark.parametrize(
    "written",
    ["张三", "张 三", "张\u3000三", " 张三 ", "\uff5a\uff48\uff41\uff4e\uff47 san"],
)
def test_card_name_matches_the_grant_normalised(written: str) -> None:
    """Width and spacing are how a name was typed, not who it is."""
    from agent.door.decision import names_match

    grant_name = "zhang san" if written.startswith("\uff5a") else "张三"
    assert names_match((written, ""), grant_name)
    assert names_match(("", "ZHANG SAN"), "Zhang San")
    assert names_match(("阿依古丽・买买提",), "阿依古丽·买买提")


def test_card_in_another_name_is_refused_before_the_face() -> None:
    other = card(card_names=("李四", ""))
    d = decide(other, [GUEST], DoorHistory(), POLICY, NOW, FRESH)
    assert not d.granted and d.reason == "name_mismatch" and d.guest == GUEST
    assert not d.needs_face and d.say == SAY_SEE_HOST
    same = decide(card(card_names=("张 三", "")), [GUEST], DoorHistory(), POLICY, NOW, FRESH)
    assert same.needs_face
    nameless = replace(GUEST, name="")
    d = decide(card(card_names=("张三", "")), [nameless], DoorHistory(), POLICY, NOW, FRESH)
    assert d.reason == "name_mismatch"  # a grant without a name matches no card


def pin(value: str = "246810") -> Presentation:
    return Presentation(lock="L101", kind="pin", pin=value)


def test_pin_reentry_after_checkin_only() -> None:
    before = decide(pin(), [GUEST], DoorHistory(), POLICY, NOW, FRESH)
    assert not before.granted and before.reason == "pin_before_checkin"
    back = replace(GUEST, checked_in_at=NOW - 600)
    d = decide(pin(), [back], DoorHistory(), POLICY, NOW, FRESH)
    assert d.granted and d.factors == ("pin",)


def test_pin_refusals() -> None:
    back = replace(GUEST, checked_in_at=NOW - 600)
    assert decide(pin("0000"), [], DoorHistory(), POLICY, NOW, FRESH).reason == "pin_wrong"
    locked = DoorHistory(pin_failures=5, pin_locked_until=NOW + 10)
    assert decide(pin(), [back], locked, POLICY, NOW, FRESH).reason == "pin_locked_out"
    assert decide(pin(), [back], locked, POLICY, NOW + 11, FRESH).granted
    no_pin_site = SitePolicy(pin_reentry=False)
    assert decide(pin(), [back], DoorHistory(), no_pin_site, NOW, FRESH).reason == "pin_not_allowed"
    no_pin_grant = replace(back, policy=GrantPolicy(pin_reentry=False))
    assert decide(pin(), [no_pin_grant], DoorHistory(), POLICY, NOW, FRESH).reason == (
        "pin_not_allowed"
    )


def test_the_stay_in_progress_is_preferred_among_several_grants() -> None:
    old = replace(GUEST, grant_id="old", valid_until=NOW + 10)
    new = replace(GUEST, grant_id="new", valid_until=NOW + 100000)
    d = decide(card(MATCH), [old, new], DoorHistory(), POLICY, NOW, FRESH)
    assert d.granted and d.guest is not None and d.guest.grant_id == "new"


def test_guest_repr_never_shows_the_id_number_or_pin() -> None:
    assert ID not in repr(GUEST)
    assert "246810" not in repr(GUEST)

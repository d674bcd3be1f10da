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
    pin="246810",
)
MATCH = FaceOutcome(True, 0.31, 0.45, "match")
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
    assert final.factors == ("id_card", "face")


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
    assert decide(card(), [per_grant], DoorHistory(), POLICY, NOW, FRESH).liveness == "blink"


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

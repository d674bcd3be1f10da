"""The door decision: a pure function of what was presented, the grants, the lock, the time
and the door's recent history. No I/O, no clock reads: everything comes in as arguments,
so the same inputs always give the same answer and every branch is testable.

Fail secure: anything missing or doubtful denies. The reason is recorded in full;
what the person at the door is told is only one of three phrases.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from agent.grants.model import VerifiedGuest

Liveness = Literal["off", "blink", "pad", "pad+blink"]
_CHECKS: dict[str, frozenset[str]] = {
    "off": frozenset(),
    "blink": frozenset({"blink"}),
    "pad": frozenset({"pad"}),
    "pad+blink": frozenset({"pad", "blink"}),
}


def required_liveness(site: Liveness, grant: str | None) -> Liveness:
    """The checks a presentation must pass: the site's, plus any more the grant asks for.

    The site's setting is a floor: a grant can add a check, never remove one
    (a grant saying ``"off"`` leaves the site's checks in force).
    """
    checks = _CHECKS[site] | _CHECKS.get(grant or "off", frozenset())
    if checks == {"pad", "blink"}:
        return "pad+blink"
    if checks == {"pad"}:
        return "pad"
    if checks == {"blink"}:
        return "blink"
    return "off"


# What the person at the door may learn (never which check failed in detail).
SAY_NOT_AUTHORISED = "not authorised"
SAY_FACE_NOT_RECOGNISED = "face not recognised"
SAY_SEE_HOST = "see the host"
SAY_WELCOME = "welcome"


@dataclass(frozen=True)
class SitePolicy:
    """The site's rules (from the configuration)."""

    reentry_requires_face: bool = True
    pin_reentry: bool = True
    liveness: Liveness = "pad"
    offline_grace_s: float = 72 * 3600.0
    pin_max_attempts: int = 5
    pin_lockout_s: float = 300.0
    card_reuse_window_s: float = 10.0


@dataclass(frozen=True)
class FaceOutcome:
    """The face check at the door, as the verifier reported it."""

    matched: bool
    distance: float | None
    threshold: float
    reason: str  # "match", "no_match", "no_face", "timeout", … (agent.face.detect.Reason)
    liveness_passed: bool | None = None  # None: not checked


@dataclass(frozen=True)
class DoorHistory:
    """Recent events at this lock that bear on the decision."""

    pin_failures: int = 0
    pin_locked_until: float | None = None


@dataclass(frozen=True)
class Presentation:
    """What was presented at one lock. ``id_number`` is held in memory only."""

    lock: str
    kind: Literal["card", "pin"]
    card_problem: str | None = None  # why the card itself is unusable (expired, bad number, …)
    id_number: str | None = field(default=None, repr=False)
    card_names: tuple[str, ...] = field(default=(), repr=False)
    """The holder's names as the card gives them (Chinese, and English on foreign cards)."""
    pin: str | None = field(default=None, repr=False)
    face: FaceOutcome | None = None


@dataclass(frozen=True)
class Decision:
    """Grant or deny, with the reason recorded and the phrase shown."""

    granted: bool
    reason: str
    say: str
    guest: VerifiedGuest | None = None
    factors: tuple[str, ...] = ()
    first_entry: bool = False
    needs_face: bool = False  # not final: capture a face and decide again
    liveness: Liveness = "off"


# Separators written between the parts of a transliterated or minority name: all one.
_NAME_DOTS = str.maketrans({"・": "·", "•": "·", "‧": "·", "∙": "·", "⋅": "·", ".": "·"})


def normalise_name(name: str) -> str:
    """A name compared as written, not as typed: full-width forms folded to their usual
    width (NFKC), every kind of space and the case of Latin letters ignored, the
    middle-dot variants of minority and foreign names made one."""
    folded = unicodedata.normalize("NFKC", name).translate(_NAME_DOTS).casefold()
    return "".join(ch for ch in folded if not ch.isspace())


def names_match(card_names: Sequence[str], grant_name: str) -> bool:
    """The grant's guest name equals one of the card's names, normalised."""
    want = normalise_name(grant_name)
    return bool(want) and any(normalise_name(n) == want for n in card_names if n)


def deny(
    reason: str, say: str = SAY_NOT_AUTHORISED, guest: VerifiedGuest | None = None
) -> Decision:
    """A refusal."""
    return Decision(False, reason, say, guest)


def decide(
    presentation: Presentation,
    candidates: Sequence[VerifiedGuest],
    history: DoorHistory,
    policy: SitePolicy,
    now: float,
    last_contact: float | None,
) -> Decision:
    """Decide one presentation. ``candidates`` are the verified guests matching the card
    (or the PIN), from any grant; ``now`` is trusted time; ``last_contact`` is when the
    platform was last heard from."""
    if last_contact is None or now - last_contact > policy.offline_grace_s:
        return deny("offline_too_long", SAY_SEE_HOST)
    if presentation.kind == "pin":
        return _decide_pin(presentation, candidates, history, policy, now)
    return _decide_card(presentation, candidates, policy, now)


def _usable(
    presentation: Presentation, candidates: Sequence[VerifiedGuest], now: float
) -> tuple[list[VerifiedGuest], str]:
    """Guests whose grant covers this lock now; else the reason none does."""
    on_lock = [g for g in candidates if g.covers(presentation.lock)]
    if not candidates:
        return [], "no_grant"
    if not on_lock:
        return [], "grant_not_for_this_lock"
    current = [g for g in on_lock if g.valid_from <= now < g.valid_until]
    if not current:
        early = all(now < g.valid_from for g in on_lock)
        return [], "grant_not_yet_valid" if early else "grant_expired"
    # Prefer the grant that ends last: the stay in progress.
    return sorted(current, key=lambda g: g.valid_until, reverse=True), ""


def _decide_card(
    presentation: Presentation,
    candidates: Sequence[VerifiedGuest],
    policy: SitePolicy,
    now: float,
) -> Decision:
    if presentation.card_problem is not None:
        return deny(f"card_invalid:{presentation.card_problem}", SAY_SEE_HOST)
    if not presentation.id_number:
        return deny("card_unreadable", SAY_SEE_HOST)
    usable, why = _usable(presentation, candidates, now)
    if not usable:
        return deny(why)
    guest = usable[0]
    if presentation.card_names and not names_match(presentation.card_names, guest.name):
        # The guest's number on a card in another name: a forged or borrowed card.
        return deny("name_mismatch", SAY_SEE_HOST, guest)
    first_entry = guest.checked_in_at is None
    liveness = required_liveness(policy.liveness, guest.policy.liveness)
    if not first_entry and not policy.reentry_requires_face:
        return Decision(True, "card", SAY_WELCOME, guest, ("id_card",), first_entry=False)
    face = presentation.face
    if face is None:
        return Decision(
            False,
            "face_required",
            "",
            guest,
            needs_face=True,
            liveness=liveness,
        )
    if liveness != "off" and face.liveness_passed is False:
        # A picture is refused as one, whether or not it resembles the guest.
        return deny("liveness_failed", SAY_FACE_NOT_RECOGNISED, guest)
    if not face.matched:
        if face.reason in ("no_match", "replayed_reference"):
            reason = "face_mismatch" if face.reason == "no_match" else face.reason
        else:
            reason = f"face_{face.reason}"
        return deny(reason, SAY_FACE_NOT_RECOGNISED, guest)
    if liveness != "off" and face.liveness_passed is not True:
        return deny("liveness_failed", SAY_FACE_NOT_RECOGNISED, guest)
    factors = ("id_card", "face", "liveness") if liveness != "off" else ("id_card", "face")
    return Decision(True, "card_and_face", SAY_WELCOME, guest, factors, first_entry=first_entry)


def _decide_pin(
    presentation: Presentation,
    candidates: Sequence[VerifiedGuest],
    history: DoorHistory,
    policy: SitePolicy,
    now: float,
) -> Decision:
    if history.pin_locked_until is not None and now < history.pin_locked_until:
        return deny("pin_locked_out")
    if not policy.pin_reentry:
        return deny("pin_not_allowed")
    usable, why = _usable(presentation, candidates, now)
    if not usable:
        return deny("pin_wrong" if why == "no_grant" else why)
    allowed = [g for g in usable if g.policy.pin_reentry]
    if not allowed:
        return deny("pin_not_allowed")
    # PIN is for re-entry only: somebody of the booking must have checked in in person.
    checked_in = [g for g in allowed if g.checked_in_at is not None]
    if not checked_in:
        return deny("pin_before_checkin", SAY_SEE_HOST)
    return Decision(True, "pin", SAY_WELCOME, checked_in[0], ("pin",), first_entry=False)

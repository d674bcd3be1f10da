"""The card visit: card → grants → face (and liveness) → decision → records → unlock.

One person, one door: while a card's visit is in progress at one door, or for
``card_reuse_window_s`` after it opened that door, the same card at another
door, where it would otherwise open (or go on to the face check), is refused
``card_in_use`` and raises ``alert.card_in_use`` (a cloned or lent card; one
guest must not let a second person in elsewhere). A card that would be refused
anyway keeps its own reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.door.decision import (
    SAY_SEE_HOST,
    Decision,
    DoorHistory,
    FaceOutcome,
    Presentation,
    decide,
    deny,
)
from agent.door.doors import DoorDevices, FlowSettings, Record, VisitOutcome
from agent.door.opening import DoorOpener
from agent.door.records import checkin_verified, door_opened, iso
from agent.face import FaceWorker, template_model, verify_burst
from agent.grants.enrol import enroll_template
from agent.grants.model import VerifiedGuest
from agent.grants.store import GrantStore
from agent.state.clock import ClockGuard
from drivers.camera.sources import FrameSource
from drivers.idcard.identity import Identity, IdentityError, check_dates, mask_id_number
from drivers.idcard.reader import CardRead

_CHINA = dt.timezone(dt.timedelta(hours=8))


class CardVisit:
    """Decides a card presented at a door and ends the visit (blocking work off the loop)."""

    def __init__(
        self,
        *,
        grants: GrantStore,
        face: FaceWorker | None,
        clock: ClockGuard,
        settings: FlowSettings,
        opener: DoorOpener,
        history: Callable[[str], DoorHistory],
        card_photo_image: Callable[[bytes, str], bytes | None] | None = None,
    ) -> None:
        self._grants = grants
        self._face = face
        self._clock = clock
        self._settings = settings
        self._opener = opener
        self._history = history
        self._card_photo_image = card_photo_image
        self._uses = CardUses()
        # Observers of each face check's latency (metrics); they must not raise.
        self.face_observers: list[Callable[[float], None]] = []

    async def visit(self, door: DoorDevices, card: CardRead) -> VisitOutcome:
        """One presentation of ``card`` at ``door``."""
        started = time.perf_counter()
        now = self._clock.now()
        today = dt.datetime.fromtimestamp(now, dt.UTC).astimezone(_CHINA).date()
        identity: Identity | None = card.identity
        problem = card.problem.reason.value if card.problem is not None else None
        if identity is not None:
            try:
                check_dates(identity, today)
            except IdentityError as exc:
                identity, problem = None, exc.reason.value
        number = identity.id_number if identity is not None else None
        if number is None:
            return await self._visit(door, card, started, now, identity, problem, number)
        key = await asyncio.to_thread(self._grants.id_hash, number)
        in_use = self._uses.in_use(key, door.lock_id, now)
        if in_use is not None:
            return await self._visit(door, card, started, now, identity, problem, number, in_use)
        previous = self._uses.begin(key, door.lock_id)
        outcome: VisitOutcome | None = None
        try:
            outcome = await self._visit(door, card, started, now, identity, problem, number)
        finally:
            granted = outcome is not None and outcome.granted
            self._uses.end(
                key,
                door.lock_id,
                self._clock.now() + self._settings.policy.card_reuse_window_s if granted else None,
                previous,
            )
        return outcome

    async def _visit(
        self,
        door: DoorDevices,
        card: CardRead,
        started: float,
        now: float,
        identity: Identity | None,
        problem: str | None,
        number: str | None,
        in_use: CardUse | None = None,
    ) -> VisitOutcome:
        candidates: list[VerifiedGuest] = []
        if number is not None:
            candidates = await asyncio.to_thread(self._grants.guests_for_card, number)
        names = () if identity is None else (identity.name, identity.name_en)
        presentation = Presentation(
            lock=door.lock_id,
            kind="card",
            card_problem=problem,
            id_number=number,
            card_names=names,
        )
        decision = self.decide(presentation, candidates)
        if in_use is not None and number is not None and (decision.granted or decision.needs_face):
            # It would open here, but the card is in use at another door.
            alert: Record = (
                "alert.card_in_use",
                {
                    "lock": door.lock_id,
                    "at": iso(now),
                    "other_lock": in_use.lock,
                    "in_progress": in_use.in_progress,
                    "id_number_masked": mask_id_number(number),
                },
            )
            return await self._opener.refuse(
                door,
                deny("card_in_use", SAY_SEE_HOST),
                started,
                id_number=number,
                method="id_card",
                alerts=[alert],
            )
        face_result: Any = None
        liveness_doc: dict[str, Any] = {"mode": "off"}
        if decision.needs_face and decision.guest is not None:
            face_outcome, face_result, liveness_doc = await self.check_face(
                door, decision.guest, decision.liveness, card
            )
            presentation = Presentation(
                lock=door.lock_id,
                kind="card",
                card_problem=problem,
                id_number=number,
                card_names=names,
                face=face_outcome,
            )
            decision = self.decide(presentation, candidates)
        if not decision.granted:
            return await self._opener.refuse(
                door,
                decision,
                started,
                id_number=number,
                method="id_card",
                face_result=face_result,
                card_names=names,
            )
        assert decision.guest is not None and identity is not None
        guest = decision.guest
        records: list[Record] = []
        if decision.first_entry:
            records.append(
                (
                    "checkin.verified",
                    checkin_verified(
                        lock=door.lock_id,
                        room=guest.room or door.room,
                        grant_id=guest.grant_id,
                        guest_id=guest.guest_id,
                        identity=identity,
                        card_photo=card.photo,
                        card_photo_format=card.photo_format,
                        live_jpeg=face_result.face_jpeg or b"",
                        face_distance=float(face_result.distance or 0.0),
                        face_threshold=float(face_result.threshold),
                        liveness=liveness_doc,
                        at=now,
                    ),
                )
            )
        records.append(
            (
                "door.opened",
                door_opened(
                    lock=door.lock_id,
                    method=list(decision.factors),
                    at=now,
                    grant_id=guest.grant_id,
                ),
            )
        )
        return await self._opener.admit(
            door,
            decision,
            records,
            started,
            now=now,
            checkin=(guest.grant_id, guest.guest_id, now),
            id_number=number,
        )

    def decide(self, presentation: Presentation, candidates: list[VerifiedGuest]) -> Decision:
        """The pure decision with this door's history, the site's policy and trusted time."""
        return decide(
            presentation,
            candidates,
            self._history(presentation.lock),
            self._settings.policy,
            self._clock.now(),
            self._clock.last_contact(),
        )

    async def check_face(
        self, door: DoorDevices, guest: VerifiedGuest, liveness: str, card: CardRead | None
    ) -> tuple[FaceOutcome, Any, dict[str, Any]]:
        """The live face against ``guest``'s template, with the liveness checks ``liveness``
        requires (the site's floor plus what the grant asked for), over one attempt's frames;
        ``card`` (if any) gives the fallback reference photo. Used by the card and the
        electronic-ID visits."""
        if self._face is None or door.camera is None:
            return FaceOutcome(False, None, 0.0, "no_camera"), None, {"mode": "off"}
        reference = await asyncio.to_thread(self._reference, guest, card)
        if reference is None:
            return FaceOutcome(False, None, 0.0, "no_reference"), None, {"mode": "off"}
        face, camera = self._face, door.camera
        pad = liveness in ("pad", "pad+blink")
        blink = liveness in ("blink", "pad+blink")
        doc: dict[str, Any] = {"mode": liveness}
        passed: bool | None = None if liveness == "off" else True
        details: list[str] = []
        if blink:
            if not face.settings.uses_blink:
                # The grant asks for a blink but the site has not loaded the landmarks model.
                passed = False
                details.append("no blink model at this site")
            else:
                frames = await asyncio.to_thread(_burst, camera, self._settings.liveness_frames)
                blinked = await asyncio.to_thread(
                    face.liveness, frames, self._settings.face_timeout_s * 2
                )
                passed = passed and bool(blinked.passed)
                details.append(str(blinked.reason))
        last, fused = await asyncio.to_thread(
            lambda: verify_burst(
                face,
                camera.read,
                reference,
                attempts=self._settings.face_attempts,
                deadline_s=self._settings.face_timeout_s * self._settings.face_attempts,
                pad=pad,
            )
        )
        if pad:
            if fused is None:  # the attempt ended early (bad or replayed reference)
                passed = False
                details.append(str(last.reason))
            else:
                passed = passed and fused.passed
                details.append(fused.reason)
                doc.update({"score": fused.score, "threshold": fused.threshold})
        if passed is not None:
            doc.update({"passed": passed, "detail": ", ".join(details)})
        for observe in self.face_observers:
            observe(float(last.elapsed_ms))
        outcome = FaceOutcome(
            bool(last.accepted),
            None if last.distance is None else float(last.distance),
            float(last.threshold),
            str(last.reason),
            passed,
        )
        return outcome, last, doc

    def _reference(self, guest: VerifiedGuest, card: CardRead | None) -> bytes | None:
        """The guest's template: stored, or made now from the grant (or, where the site
        allows it, the decoded card) photo. A template of another model is made again."""
        assert self._face is not None
        template = self._grants.template(guest.grant_id, guest.guest_id)
        if template is not None and template_model(template) == self._face.model:
            return template
        if guest.has_photo:
            return enroll_template(self._grants, self._face, guest.grant_id, guest.guest_id)
        if self._card_photo_image is None or card is None:
            return None
        photo = self._card_photo_image(card.photo, card.photo_format)
        if photo is None:
            return None
        made = self._face.encode_reference(photo, self._settings.face_timeout_s * 2)
        return made if isinstance(made, bytes) else None


@dataclass(frozen=True)
class CardUse:
    """Where a card was last used: the door, and whether its visit is still going on."""

    lock: str
    in_progress: bool
    until: float  # trusted time after which another door may take it (when not in progress)


class CardUses:
    """One person, one door: each card's visit in progress or recent opening, by keyed hash
    (the ID number itself is not kept). Memory only: a restart forgets it."""

    def __init__(self) -> None:
        self._uses: dict[str, CardUse] = {}

    def in_use(self, key: str, lock: str, now: float) -> CardUse | None:
        """The use that keeps this card from ``lock`` now, if any."""
        for stale in [k for k, u in self._uses.items() if not u.in_progress and u.until <= now]:
            del self._uses[stale]
        use = self._uses.get(key)
        if use is None or use.lock == lock:
            return None
        return use

    def begin(self, key: str, lock: str) -> CardUse | None:
        """A visit starts at ``lock``; returns what it replaces."""
        previous = self._uses.get(key)
        self._uses[key] = CardUse(lock, True, math.inf)
        return previous

    def end(self, key: str, lock: str, until: float | None, previous: CardUse | None) -> None:
        """The visit ended: an opening holds the card at ``lock`` until ``until``; a refusal
        leaves what was there before."""
        if until is not None:
            self._uses[key] = CardUse(lock, False, until)
        elif previous is not None:
            self._uses[key] = previous
        else:
            self._uses.pop(key, None)


def _burst(camera: FrameSource, count: int) -> list[np.ndarray]:
    frames = []
    for _ in range(count * 2):
        frame = camera.read()
        if frame is not None:
            frames.append(frame)
            if len(frames) >= count:
                break
    return frames

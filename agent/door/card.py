"""The card visit: card → grants → face (and liveness) → decision → records → unlock."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.door.decision import Decision, DoorHistory, FaceOutcome, Presentation, decide
from agent.door.doors import DoorDevices, FlowSettings, Record, VisitOutcome
from agent.door.opening import DoorOpener
from agent.door.records import checkin_verified, door_opened
from agent.face import FaceWorker, template_model, verify_burst
from agent.grants.enrol import enroll_template
from agent.grants.model import VerifiedGuest
from agent.grants.store import GrantStore
from agent.state.clock import ClockGuard
from drivers.camera.sources import FrameSource
from drivers.idcard.identity import Identity, IdentityError, check_dates
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
        decision = self._decide(presentation, candidates)
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
            decision = self._decide(presentation, candidates)
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
            door, decision, records, started, now=now, checkin=(guest.grant_id, guest.guest_id, now)
        )

    def _decide(self, presentation: Presentation, candidates: list[VerifiedGuest]) -> Decision:
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


def _burst(camera: FrameSource, count: int) -> list[np.ndarray]:
    frames = []
    for _ in range(count * 2):
        frame = camera.read()
        if frame is not None:
            frames.append(frame)
            if len(frames) >= count:
                break
    return frames

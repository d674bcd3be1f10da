"""The door flow: card → grant → face → records committed → only then unlock → feedback.

Runs on the daemon's asyncio loop. Device threads hand their events over with
``call_soon_threadsafe``; anything that blocks (the store, face inference, the
camera, the bus) runs in a worker thread with ``asyncio.to_thread``, so one
door's slow face never holds up another door, the link or the watchdog. One
presentation at a time per door; a card presented while the door is busy is
refused as ``busy`` rather than queued.

Record before unlock: the records of an opening (``checkin.verified`` for a
guest's first verified entry, ``door.opened``) are committed to the outbox in
one transaction, together with the guest's checked-in mark, before the unlock
command goes to the lock. If the lock then does not take the command, a
``door.unlock_failed`` event follows: the platform learns that the recorded
opening did not happen.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from agent.door.alerts import Alert, AlertRules
from agent.door.decision import (
    SAY_SEE_HOST,
    Decision,
    DoorHistory,
    FaceOutcome,
    Presentation,
    SitePolicy,
    decide,
    deny,
)
from agent.door.records import access_denied, checkin_verified, door_opened, iso
from agent.face import FaceWorker, verify_attempts, watch_entry
from agent.grants.model import VerifiedGuest
from agent.grants.store import GrantStore
from agent.state.clock import ClockGuard
from agent.state.store import Store
from agent.sync.journal import Journal
from agent.sync.outbox import Outbox
from drivers.camera.sources import FrameSource
from drivers.idcard.identity import Identity, IdentityError, mask_id_number, parse_identity
from drivers.idcard.reader import CardRead
from drivers.osdp.bus import LockOffline
from drivers.osdp.events import (
    BusStatus,
    DoorStateChanged,
    KeyMismatch,
    KeypadEntry,
    LockEvent,
    LockStatusChanged,
)

log = logging.getLogger(__name__)

OCCUPANT_FRAME_PERIOD_S = 0.5
# How long an unlock waits for a lock that is offline for a moment (the guest is at the door).
UNLOCK_RETRY_S = 2.0


class LockPort(Protocol):
    """What the flow needs of a bus: unlock and feedback by address."""

    def unlock(self, address: int, seconds: float) -> None:
        """Energise the lock's relay for ``seconds``."""

    def feedback(self, address: int, granted: bool) -> None:
        """LED and buzzer: granted or denied."""


@dataclass
class DoorDevices:
    """One door's parts."""

    lock_id: str
    room: str
    bus_name: str
    address: int
    unlock_seconds: float
    bus: LockPort | None
    camera: FrameSource | None


@dataclass
class _DoorState:
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    pin_failures: int = 0
    pin_locked_until: float | None = None
    keys: str = ""
    keys_at: float = 0.0
    occupants_task: asyncio.Task[None] | None = None
    verified_in_window: int = 0
    window_grant: str | None = None


@dataclass(frozen=True)
class FlowSettings:
    """Tunables of the flow (from the configuration)."""

    policy: SitePolicy
    face_attempts: int = 5
    face_timeout_s: float = 2.0
    liveness_frames: int = 12
    pin_max_len: int = 12
    pin_entry_timeout_s: float = 10.0


@dataclass(frozen=True)
class Outcome:
    """What one presentation came to (for tests, the CLI and metrics)."""

    lock: str
    granted: bool
    reason: str
    say: str
    seqs: tuple[int | None, ...]
    elapsed_ms: float


class DoorFlow:
    """Decides presentations and performs openings for every door of the gateway."""

    def __init__(
        self,
        *,
        store: Store,
        outbox: Outbox,
        grants: GrantStore,
        clock: ClockGuard,
        rules: AlertRules,
        face: FaceWorker | None,
        doors: list[DoorDevices],
        settings: FlowSettings,
        card_photo_image: Callable[[bytes, str], bytes | None] | None = None,
    ) -> None:
        self._store = store
        self._outbox = outbox
        self._grants = grants
        self._clock = clock
        self._rules = rules
        self._face = face
        self._doors = {d.lock_id: d for d in doors}
        self._by_address = {(d.bus_name, d.address): d for d in doors}
        self._settings = settings
        self._card_photo_image = card_photo_image
        # Observers of every presentation's outcome and of each face check's latency
        # (recent outcomes for status, metrics); they must not raise.
        self.outcome_observers: list[Callable[[Outcome], None]] = []
        self.face_observers: list[Callable[[float], None]] = []
        self._state = {d.lock_id: _DoorState() for d in doors}
        self.counters: dict[str, int] = {}
        self.journal = Journal()

    # -- entry points (on the loop) ---------------------------------------------------

    async def present_card(self, lock_id: str, card: CardRead) -> Outcome:
        """A card was read at ``lock_id``'s reader."""
        door, state = self._doors[lock_id], self._state[lock_id]
        if state.busy.locked():
            self._count("busy")
            return await self._finish_denied(door, deny("busy", SAY_SEE_HOST), None, "card", 0.0)
        async with state.busy:
            return await self._card(door, card)

    async def keypad(self, lock_id: str, digits: str) -> Outcome | None:
        """Keys typed at the lock; a PIN ends with ``#`` (``*`` clears)."""
        state = self._state[lock_id]
        now = time.monotonic()
        if now - state.keys_at > self._settings.pin_entry_timeout_s:
            state.keys = ""
        state.keys_at = now
        for key in digits:
            if key == "*":
                state.keys = ""
            elif key == "#":
                pin, state.keys = state.keys, ""
                if pin:
                    async with state.busy:
                        return await self._pin(self._doors[lock_id], pin)
            elif key.isdigit() and len(state.keys) < self._settings.pin_max_len:
                state.keys += key
        return None

    async def remote_unlock(self, lock_id: str, seconds: float, reason: str) -> Outcome:
        """The platform's ``lock.unlock``: recorded first, then carried out."""
        door = self._doors.get(lock_id)
        started = time.perf_counter()
        now = self._clock.now()
        if door is None:
            raise KeyError(lock_id)
        body = door_opened(lock=lock_id, method=["remote"], at=now, remote=reason)
        seqs = await asyncio.to_thread(self._commit, [("door.opened", body)], None)
        await self._unlock(door, seconds, now, None)
        return self._done(Outcome(lock_id, True, "remote", "", seqs, _ms(started)))

    async def lock_event(self, bus_name: str, event: LockEvent) -> None:
        """A driver event: door states and lock status become events, some also alerts."""
        door = self._by_address.get((bus_name, getattr(event, "address", -1)))
        if door is None:
            if not isinstance(event, BusStatus):
                self._count("events_unknown_lock")
            return
        at = iso(self._clock.now())
        records: list[tuple[str, dict[str, Any]]] = []
        if isinstance(event, DoorStateChanged):
            if event.state.value in ("closed", "open", "forced", "held_open"):
                records += self._rules.on_door_state(door.lock_id, at, event.state.value)
                records.append(
                    ("door.state", {"lock": door.lock_id, "state": event.state.value, "at": at})
                )
        elif isinstance(event, LockStatusChanged):
            records += self._rules.on_lock_status(
                door.lock_id,
                at,
                event.online,
                event.tamper,
                was_online=event.was_online is not False,
                was_tamper=event.was_tamper,
            )
            records.append(
                (
                    "lock.status",
                    {
                        "lock": door.lock_id,
                        "online": event.online,
                        "tamper": event.tamper,
                        "at": at,
                    },
                )
            )
        elif isinstance(event, KeypadEntry):
            await self.keypad(door.lock_id, event.digits)
        elif isinstance(event, KeyMismatch):
            records.append(("lock.key_mismatch", {"lock": door.lock_id, "at": at}))
        if records:
            await asyncio.to_thread(self._commit, records, None)

    def door_ids(self) -> list[str]:
        """The configured lock ids."""
        return list(self._doors)

    # -- the card path ------------------------------------------------------------------

    async def _card(self, door: DoorDevices, card: CardRead) -> Outcome:
        started = time.perf_counter()
        now = self._clock.now()
        today = dt.datetime.fromtimestamp(now, dt.UTC).astimezone(_CHINA).date()
        identity: Identity | None = None
        problem: str | None = None
        try:
            identity = parse_identity(card.text, today=today)
        except IdentityError as exc:
            problem = exc.reason.value
        number = identity.id_number if identity is not None else None
        candidates: list[VerifiedGuest] = []
        if number is not None:
            candidates = await asyncio.to_thread(self._grants.guests_for_card, number)
        presentation = Presentation(
            lock=door.lock_id, kind="card", card_problem=problem, id_number=number
        )
        decision = self._decide(presentation, candidates, door)
        face_result: Any = None
        liveness_doc: dict[str, Any] = {"mode": "off"}
        if decision.needs_face and decision.guest is not None:
            face_outcome, face_result, liveness_doc = await self._check_face(
                door, decision.guest, decision.liveness, card
            )
            presentation = Presentation(
                lock=door.lock_id,
                kind="card",
                card_problem=problem,
                id_number=number,
                face=face_outcome,
            )
            decision = self._decide(presentation, candidates, door)
        if not decision.granted:
            return await self._finish_denied(
                door, decision, number, "id_card", _ms(started), face_result
            )
        assert decision.guest is not None and identity is not None
        records: list[tuple[str, dict[str, Any]]] = []
        if decision.first_entry:
            records.append(
                (
                    "checkin.verified",
                    checkin_verified(
                        lock=door.lock_id,
                        room=decision.guest.room or door.room,
                        grant_id=decision.guest.grant_id,
                        guest_id=decision.guest.guest_id,
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
                    grant_id=decision.guest.grant_id,
                ),
            )
        )
        guest = decision.guest
        seqs = await asyncio.to_thread(self._commit, records, (guest.grant_id, guest.guest_id, now))
        await self._unlock(door, door.unlock_seconds, now, guest.grant_id)
        log.info(
            "door opened",
            extra={"lock": door.lock_id, "grant_id": guest.grant_id, "method": decision.reason},
        )
        return self._done(
            Outcome(door.lock_id, True, decision.reason, decision.say, seqs, _ms(started))
        )

    def _decide(
        self, presentation: Presentation, candidates: list[VerifiedGuest], door: DoorDevices
    ) -> Decision:
        state = self._state[door.lock_id]
        history = DoorHistory(state.pin_failures, state.pin_locked_until)
        return decide(
            presentation,
            candidates,
            history,
            self._settings.policy,
            self._clock.now(),
            self._clock.last_contact(),
        )

    async def _check_face(
        self, door: DoorDevices, guest: VerifiedGuest, liveness: str, card: CardRead | None
    ) -> tuple[FaceOutcome, Any, dict[str, Any]]:
        if self._face is None or door.camera is None:
            return FaceOutcome(False, None, 0.0, "no_camera"), None, {"mode": "off"}
        reference = await asyncio.to_thread(self._reference, guest, card)
        if reference is None:
            return FaceOutcome(False, None, 0.0, "no_reference"), None, {"mode": "off"}
        liveness_doc: dict[str, Any] = {"mode": liveness}
        liveness_passed: bool | None = None
        if liveness != "off" and self._face.settings.liveness == "off":
            # The grant asks for liveness but the site has not loaded a liveness model.
            liveness_passed = False
            liveness_doc.update({"passed": False, "detail": "no liveness model at this site"})
        elif liveness != "off":
            frames = await asyncio.to_thread(_burst, door.camera, self._settings.liveness_frames)
            result = await asyncio.to_thread(
                self._face.liveness, frames, self._settings.face_timeout_s * 2
            )
            liveness_passed = bool(result.passed)
            liveness_doc.update({"passed": liveness_passed, "detail": str(result.reason)})
        face = self._face
        last = await asyncio.to_thread(
            lambda: verify_attempts(
                face,
                door.camera.read if door.camera is not None else lambda: None,
                reference,
                attempts=self._settings.face_attempts,
                deadline_s=self._settings.face_timeout_s * self._settings.face_attempts,
            )
        )
        for observe in self.face_observers:
            observe(float(last.elapsed_ms))
        outcome = FaceOutcome(
            bool(last.accepted),
            None if last.distance is None else float(last.distance),
            float(last.threshold),
            str(last.reason),
            liveness_passed,
        )
        return outcome, last, liveness_doc

    def _reference(self, guest: VerifiedGuest, card: CardRead | None) -> bytes | None:
        """The guest's template: stored, or made now from the grant (or decoded card) photo."""
        assert self._face is not None
        template = self._grants.template(guest.grant_id, guest.guest_id)
        if template is not None:
            return template
        timeout = self._settings.face_timeout_s * 2
        if guest.has_photo:
            return enroll_template(
                self._grants, self._face, guest.grant_id, guest.guest_id, timeout
            )
        if self._card_photo_image is None or card is None:
            return None
        photo = self._card_photo_image(card.photo, card.photo_format)
        if photo is None:
            return None
        made = self._face.encode_reference(photo, timeout)
        return made if isinstance(made, bytes) else None

    # -- PIN path -------------------------------------------------------------------------

    async def _pin(self, door: DoorDevices, pin: str) -> Outcome:
        started = time.perf_counter()
        now = self._clock.now()
        state = self._state[door.lock_id]
        candidates = await asyncio.to_thread(self._grants.guests_for_pin, pin)
        decision = self._decide(
            Presentation(lock=door.lock_id, kind="pin", pin=pin), candidates, door
        )
        if not decision.granted:
            extra: list[Alert] = []
            if decision.reason == "pin_wrong":
                state.pin_failures += 1
                if state.pin_failures >= self._settings.policy.pin_max_attempts:
                    state.pin_locked_until = now + self._settings.policy.pin_lockout_s
                    state.pin_failures = 0
                    extra.append(
                        (
                            "alert.brute_force",
                            {
                                "lock": door.lock_id,
                                "at": iso(now),
                                "failures": self._settings.policy.pin_max_attempts,
                                "kind": "pin",
                                "locked_out_s": self._settings.policy.pin_lockout_s,
                            },
                        )
                    )
            return await self._finish_denied(door, decision, None, "pin", _ms(started), extra=extra)
        state.pin_failures = 0
        assert decision.guest is not None
        body = door_opened(
            lock=door.lock_id, method=["pin"], at=now, grant_id=decision.guest.grant_id
        )
        seqs = await asyncio.to_thread(self._commit, [("door.opened", body)], None)
        await self._unlock(door, door.unlock_seconds, now, decision.guest.grant_id)
        return self._done(Outcome(door.lock_id, True, "pin", decision.say, seqs, _ms(started)))

    # -- records, unlock, feedback ----------------------------------------------------------

    async def _finish_denied(
        self,
        door: DoorDevices,
        decision: Decision,
        id_number: str | None,
        method: str,
        elapsed_ms: float,
        face_result: Any = None,
        extra: list[Alert] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Outcome:
        now = self._clock.now()
        at = iso(now)
        records: list[tuple[str, dict[str, Any]]] = list(extra or [])
        if decision.reason == "face_mismatch" and decision.guest is not None:
            evidence: dict[str, Any] = {
                "grant_id": decision.guest.grant_id,
                "guest_id": decision.guest.guest_id,
                "face_threshold": float(face_result.threshold) if face_result else None,
                "face_distance": float(face_result.distance)
                if face_result is not None and face_result.distance is not None
                else None,
                "id_number_masked": mask_id_number(id_number) if id_number else None,
            }
            if face_result is not None and face_result.face_jpeg:
                evidence["live_jpeg_b64"] = base64.b64encode(face_result.face_jpeg).decode("ascii")
            records += self._rules.on_identity_mismatch(door.lock_id, at, evidence)
        if decision.reason == "no_grant" and id_number:
            records += self._rules.on_unknown_card(
                door.lock_id, at, now, self._grants.id_hash(id_number), mask_id_number(id_number)
            )
        records += self._rules.on_denial(door.lock_id, at, now, decision.reason)
        records.append(
            (
                "access.denied",
                access_denied(
                    lock=door.lock_id,
                    reason=decision.reason,
                    at=now,
                    id_number=id_number,
                    method=method,
                )
                | (detail or {}),
            )
        )
        seqs = await asyncio.to_thread(self._commit, records, None)
        if door.bus is not None:
            try:
                await asyncio.to_thread(door.bus.feedback, door.address, False)
            except Exception as exc:
                log.warning(
                    "denied feedback failed", extra={"lock": door.lock_id, "error": str(exc)}
                )
        log.info("access denied", extra={"lock": door.lock_id, "reason": decision.reason})
        return self._done(
            Outcome(door.lock_id, False, decision.reason, decision.say, seqs, elapsed_ms)
        )

    def _commit(
        self,
        records: list[tuple[str, dict[str, Any]]],
        checkin: tuple[str, str, float] | None,
    ) -> tuple[int | None, ...]:
        with self._store.write() as conn:
            seqs = tuple(self._outbox.enqueue_in(conn, t, b) for t, b in records)
            if checkin is not None:
                self._grants.mark_checked_in(conn, *checkin)
        self._outbox.notify()
        for seq, (msg_type, body) in zip(seqs, records, strict=True):
            self.journal.add(seq, msg_type, body)
        return seqs

    async def _unlock(
        self, door: DoorDevices, seconds: float, now: float, grant_id: str | None
    ) -> None:
        if door.bus is None:
            await asyncio.to_thread(self._unlock_failed, door, now, "no lock bus configured")
            return
        try:
            await self._unlock_with_retry(door.bus, door.address, seconds)
        except Exception as exc:
            log.error(
                "unlock failed after the record", extra={"lock": door.lock_id, "error": str(exc)}
            )
            await asyncio.to_thread(self._unlock_failed, door, now, str(exc))
            return
        try:
            await asyncio.to_thread(door.bus.feedback, door.address, True)
        except Exception as exc:
            log.warning("granted feedback failed", extra={"lock": door.lock_id, "error": str(exc)})
        self._start_occupant_watch(door, seconds, grant_id)

    async def _unlock_with_retry(self, bus: LockPort, address: int, seconds: float) -> None:
        """Unlock; a lock that is offline for a moment (a missed poll) gets a short grace."""
        deadline = time.monotonic() + UNLOCK_RETRY_S
        while True:
            try:
                await asyncio.to_thread(bus.unlock, address, seconds)
                return
            except LockOffline:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)

    def _unlock_failed(self, door: DoorDevices, now: float, error: str) -> None:
        self._count("unlock_failed")
        self._commit(
            [("door.unlock_failed", {"lock": door.lock_id, "at": iso(now), "error": error[:200]})],
            None,
        )

    # -- occupant counting --------------------------------------------------------------------

    def _start_occupant_watch(
        self, door: DoorDevices, seconds: float, grant_id: str | None
    ) -> None:
        state = self._state[door.lock_id]
        state.verified_in_window += 1
        state.window_grant = grant_id
        if self._face is None or door.camera is None:
            return
        if state.occupants_task is None or state.occupants_task.done():
            state.occupants_task = asyncio.create_task(self._watch_occupants(door, seconds))

    async def _watch_occupants(self, door: DoorDevices, seconds: float) -> None:
        face, camera = self._face, door.camera
        assert face is not None and camera is not None
        state = self._state[door.lock_id]
        timeout = self._settings.face_timeout_s
        try:
            count = await asyncio.to_thread(
                lambda: watch_entry(
                    camera.read,
                    lambda frame: face.encodings(frame, timeout),
                    verified=1,
                    duration_s=seconds,
                    frame_interval_s=OCCUPANT_FRAME_PERIOD_S,
                )
            )
            verified, grant = state.verified_in_window, state.window_grant
            alerts = self._rules.on_occupants(
                door.lock_id, iso(self._clock.now()), count.faces, verified, grant
            )
            if alerts:
                await asyncio.to_thread(self._commit, list(alerts), None)
        finally:
            state.verified_in_window = 0
            state.window_grant = None

    # -- bookkeeping ------------------------------------------------------------------------

    def _done(self, outcome: Outcome) -> Outcome:
        self._count("granted" if outcome.granted else f"denied_{outcome.reason}")
        for observe in self.outcome_observers:
            try:
                observe(outcome)
            except Exception:
                log.exception("outcome observer failed")
        return outcome

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


_CHINA = dt.timezone(dt.timedelta(hours=8))
# Worker answers that say "try again later", not "this photo has no usable face".
_TRANSIENT_FACE_REASONS = frozenset({"busy", "worker_starting", "timeout"})


def enroll_template(
    grants: GrantStore, face: FaceWorker, grant_id: str, guest_id: str, timeout: float
) -> bytes | None:
    """Encode the guest's grant photo once and keep the template sealed (blocking).

    A photo without a usable face is marked failed, with the reason; a busy or
    restarting worker leaves the guest pending, to be tried again.
    """
    photo = grants.guest_photo(grant_id, guest_id)
    if photo is None:
        grants.store_template(grant_id, guest_id, None, "no_photo")
        return None
    made = face.encode_reference(photo, timeout)
    if isinstance(made, bytes):
        grants.store_template(grant_id, guest_id, made, "ok")
        return made
    if str(made) not in _TRANSIENT_FACE_REASONS:
        grants.store_template(grant_id, guest_id, None, f"failed:{made}")
        log.warning(
            "grant photo gives no face template", extra={"grant_id": grant_id, "reason": str(made)}
        )
    return None


def _burst(camera: FrameSource, count: int) -> list[np.ndarray]:
    frames = []
    for _ in range(count * 2):
        frame = camera.read()
        if frame is not None:
            frames.append(frame)
            if len(frames) >= count:
                break
    return frames


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000

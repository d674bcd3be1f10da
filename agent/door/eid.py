"""Check-in with the electronic ID (网证): code read → face → ``eid.verify`` → bounded wait
→ the card decision on the identity the platform vouched for.

The one door path that waits on the network (contract 1.1 section 6). It runs on
the daemon's asyncio loop like the card path: blocking work (camera, face worker,
store) goes to worker threads, and the wait for ``eid.result`` is an awaited
future with a deadline, so a slow platform holds up only the door whose guest is
waiting, never another door, the card path or the link. No thread per request.

Timing: the guest's wait starts when the code is read (``at``); ``answer_by`` is
``at`` plus ``answer_timeout_s`` (at most 10 s). The face crop is taken first (it
goes with the request); without a link the door refuses at once; with no answer
by ``answer_by`` it refuses ``eid_unavailable`` then. A result that comes later
finds no waiting request and is ignored (counted ``late``).

Once verified, the identity is validated like a card's (:mod:`agent.door.eidresult`)
and the decision is the card's: grants by ID number, the live face against the
guest's template, liveness, records committed, then the unlock. ``door.opened``
names the factor ``eid`` instead of ``id_card``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.door.decision import SAY_SEE_HOST, Decision, Presentation, deny
from agent.door.eidresult import EidAnswer, read_result
from agent.door.flow import DoorDevices, DoorFlow, Outcome
from agent.door.records import checkin_verified_eid, door_opened, iso
from agent.grants.model import VerifiedGuest
from drivers.camera.sources import FrameSource
from drivers.qr.dedup import SeenCodes

log = logging.getLogger(__name__)

_CHINA = dt.timezone(dt.timedelta(hours=8))
MAX_ANSWER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class EidSettings:
    """The ``[eid]`` section's tunables."""

    answer_timeout_s: float = 3.0
    code_lifetime_s: float = 300.0
    face_wait_s: float = 1.0
    camera_scan_interval_s: float = 0.2


class PendingRequests:
    """``eid.verify`` requests still waiting for their result.

    :meth:`open` and :meth:`close` run on the loop; :meth:`deliver` is called from
    the link thread (through the command processor) and hands the result to the
    loop. Ids of requests no longer waited on are remembered (bounded) so that a
    late result is told apart from one for a request never made.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, remember: int = 1024) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._closed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._remember = remember
        self.counters: dict[str, int] = {"matched": 0, "late": 0, "unknown": 0}

    def open(self, request_id: str) -> asyncio.Future[dict[str, Any]]:
        """Start waiting for ``request_id``'s result."""
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        with self._lock:
            self._waiting[request_id] = future
        return future

    def close(self, request_id: str) -> None:
        """Stop waiting: a result for this request from now on is late."""
        with self._lock:
            future = self._waiting.pop(request_id, None)
            self._closed[request_id] = None
            while len(self._closed) > self._remember:
                self._closed.popitem(last=False)
        if future is not None and not future.done():
            future.cancel()

    def deliver(self, body: dict[str, Any]) -> str:
        """Hand a verified ``eid.result`` body to its waiting request (any thread).

        Returns ``matched``, ``late`` (no longer waited on) or ``unknown`` (never made).
        """
        request_id = str(body.get("request_id"))
        with self._lock:
            future = self._waiting.pop(request_id, None)
            if future is None:
                outcome = "late" if request_id in self._closed else "unknown"
            else:
                outcome = "matched"
                self._closed[request_id] = None
            self.counters[outcome] += 1
        if future is not None:
            self._loop.call_soon_threadsafe(_settle, future, body)
        return outcome

    @property
    def waiting(self) -> int:
        """Requests waiting now."""
        with self._lock:
            return len(self._waiting)


def _settle(future: asyncio.Future[dict[str, Any]], body: dict[str, Any]) -> None:
    if not future.done():
        future.set_result(body)


class SerializedCamera:
    """A camera read from two places (the code scan and the face check) one read at a time."""

    def __init__(self, source: FrameSource) -> None:
        self._source = source
        self._lock = threading.Lock()

    def read(self) -> np.ndarray | None:
        """The next frame."""
        with self._lock:
            return self._source.read()

    def close(self) -> None:
        """Release the camera."""
        with self._lock:
            self._source.close()


class EidCheckin:
    """The electronic-ID path of every door; codes come from scanners and cameras."""

    def __init__(
        self,
        flow: DoorFlow,
        requests: PendingRequests,
        settings: EidSettings,
        *,
        link_up: Callable[[], bool],
        scan_doors: frozenset[str] = frozenset(),
    ) -> None:
        if not 0 < settings.answer_timeout_s <= MAX_ANSWER_TIMEOUT_S:
            raise ValueError(f"answer_timeout_s must be in (0, {MAX_ANSWER_TIMEOUT_S:g}]")
        self._flow = flow
        self._requests = requests
        self._settings = settings
        self._link_up = link_up
        self._seen = SeenCodes(settings.code_lifetime_s)
        self._scan_doors = scan_doors
        self._scanners: list[asyncio.Task[None]] = []
        self.counters: dict[str, int] = {}

    @property
    def requests(self) -> PendingRequests:
        """The requests waiting for a result (for status and tests)."""
        return self._requests

    # -- entry points (on the loop) ----------------------------------------------------

    async def present_code(self, lock_id: str, code: str, source: str) -> Outcome | None:
        """A 网证 code read at ``lock_id`` (``source``: ``scanner`` or ``camera``).

        None when the code is not acted on: shown again within its lifetime, or seen
        by the camera while the door is busy (it is read again once the door is free).
        """
        flow = self._flow
        door = flow._doors.get(lock_id)
        if door is None:
            self._count("unknown_door")
            return None
        state = flow._state[lock_id]
        if state.busy.locked():
            if source == "camera":
                return None
            self._count("busy")
            return await flow._finish_denied(door, deny("busy", SAY_SEE_HOST), None, "eid", 0.0)
        if not self._seen.first_time(code, time.monotonic()):
            self._count("repeated_code")
            return None
        self._count(f"codes_{source}")
        async with state.busy:
            return await self._checkin(door, code)

    def start_camera_scans(self) -> None:
        """Look for codes in the frames of every door configured for it (on the loop)."""
        for lock_id in sorted(self._scan_doors):
            door = self._flow._doors.get(lock_id)
            if door is not None and door.camera is not None:
                self._scanners.append(asyncio.create_task(self._scan(door)))

    def stop_camera_scans(self) -> None:
        """Stop looking for codes in camera frames."""
        for task in self._scanners:
            task.cancel()
        self._scanners.clear()

    @property
    def scanning(self) -> bool:
        """True while every camera scan started is running."""
        return all(not task.done() for task in self._scanners)

    # -- the check-in ---------------------------------------------------------------------

    async def _checkin(self, door: DoorDevices, code: str) -> Outcome:
        flow = self._flow
        started = time.perf_counter()
        deadline = time.monotonic() + self._settings.answer_timeout_s
        at = flow._clock.now()
        if not self._link_up():
            self._count("no_link")
            return await self._refuse(door, "eid_unavailable", started, error="no link")
        crop = await asyncio.to_thread(self._face_crop, door, deadline)
        if crop is None:
            return await self._refuse(door, "eid_no_face", started)
        request_id = str(uuid.uuid4())
        answer_by = at + self._settings.answer_timeout_s
        body = {
            "request_id": request_id,
            "lock": door.lock_id,
            "code": code,
            "live_jpeg_b64": base64.b64encode(crop).decode("ascii"),
            "at": iso(at),
            "answer_by": iso(answer_by),
        }
        waiting = self._requests.open(request_id)
        try:
            await asyncio.to_thread(flow._commit, [("eid.verify", body)], None)
            result = await asyncio.wait_for(waiting, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self._requests.close(request_id)
            self._count("unanswered")
            return await self._refuse(
                door, "eid_unavailable", started, request_id, error="no answer by answer_by"
            )
        except Exception as exc:  # the request could not be recorded: fail secure
            self._requests.close(request_id)
            log.error("eid.verify not recorded", extra={"lock": door.lock_id, "error": str(exc)})
            return await self._refuse(door, "eid_unavailable", started, error="not recorded")
        answer = read_result(result, self._today(flow._clock.now()))
        if not answer.verified or answer.identity is None:
            if answer.error.startswith("identity_invalid"):
                self._count("identity_invalid")
                log.warning(
                    "eid.result identity refused",
                    extra={"lock": door.lock_id, "error": answer.error},
                )
            return await self._refuse(door, "eid_failed", started, request_id, error=answer.error)
        return await self._decide_and_open(door, answer, crop, request_id, started)

    async def _decide_and_open(
        self, door: DoorDevices, answer: EidAnswer, crop: bytes, request_id: str, started: float
    ) -> Outcome:
        flow = self._flow
        identity = answer.identity
        assert identity is not None
        number = identity.id_number
        candidates: list[VerifiedGuest] = await asyncio.to_thread(
            flow._grants.guests_for_card, number
        )
        presentation = Presentation(lock=door.lock_id, kind="card", id_number=number)
        decision = flow._decide(presentation, candidates, door)
        face_result: Any = None
        liveness_doc: dict[str, Any] = {"mode": "off"}
        if decision.needs_face and decision.guest is not None:
            face, face_result, liveness_doc = await flow._check_face(
                door, decision.guest, decision.liveness, None
            )
            presentation = Presentation(lock=door.lock_id, kind="card", id_number=number, face=face)
            decision = flow._decide(presentation, candidates, door)
        detail = {"eid_request_id": request_id}
        if not decision.granted:
            return await flow._finish_denied(
                door, decision, number, "eid", _ms(started), face_result, detail=detail
            )
        guest = decision.guest
        assert guest is not None
        now = flow._clock.now()
        records: list[tuple[str, dict[str, Any]]] = []
        if decision.first_entry:
            records.append(
                (
                    "checkin.verified",
                    checkin_verified_eid(
                        lock=door.lock_id,
                        room=guest.room or door.room,
                        grant_id=guest.grant_id,
                        guest_id=guest.guest_id,
                        identity=identity,
                        live_jpeg=(face_result.face_jpeg if face_result else None) or crop,
                        face_distance=float(getattr(face_result, "distance", 0.0) or 0.0),
                        face_threshold=float(getattr(face_result, "threshold", 0.0) or 0.0),
                        liveness=liveness_doc,
                        request_id=request_id,
                        at=now,
                    ),
                )
            )
        method = ["eid" if factor == "id_card" else factor for factor in decision.factors]
        records.append(
            (
                "door.opened",
                door_opened(lock=door.lock_id, method=method, at=now, grant_id=guest.grant_id),
            )
        )
        seqs = await asyncio.to_thread(flow._commit, records, (guest.grant_id, guest.guest_id, now))
        await flow._unlock(door, door.unlock_seconds, now, guest.grant_id)
        log.info(
            "door opened",
            extra={"lock": door.lock_id, "grant_id": guest.grant_id, "method": "eid"},
        )
        self._count("granted")
        return flow._done(
            Outcome(door.lock_id, True, f"eid_{decision.reason}", decision.say, seqs, _ms(started))
        )

    async def _refuse(
        self,
        door: DoorDevices,
        reason: str,
        started: float,
        request_id: str | None = None,
        *,
        error: str | None = None,
    ) -> Outcome:
        self._count(reason)
        detail: dict[str, Any] = {}
        if request_id is not None:
            detail["eid_request_id"] = request_id
        if error:
            detail["error"] = error[:200]
        decision: Decision = deny(reason, SAY_SEE_HOST)
        return await self._flow._finish_denied(
            door, decision, None, "eid", _ms(started), detail=detail
        )

    # -- blocking helpers (worker threads) --------------------------------------------------

    def _face_crop(self, door: DoorDevices, deadline: float) -> bytes | None:
        """The first usable face crop from the door camera, within ``face_wait_s``."""
        face, camera = self._flow._face, door.camera
        if face is None or camera is None:
            return None
        give_up = min(deadline, time.monotonic() + self._settings.face_wait_s)
        while time.monotonic() < give_up:
            frame = camera.read()
            if frame is None:
                continue
            made = face.live_face(frame, max(0.05, give_up - time.monotonic()))
            if isinstance(made, bytes):
                return made
        return None

    async def _scan(self, door: DoorDevices) -> None:
        from drivers.qr.camera import FrameDecoder

        decoder = FrameDecoder()
        camera = door.camera
        assert camera is not None
        state = self._flow._state[door.lock_id]
        interval = self._settings.camera_scan_interval_s
        while True:
            await asyncio.sleep(interval)
            if state.busy.locked():
                continue
            try:
                frame = await asyncio.to_thread(camera.read)
                codes = [] if frame is None else await asyncio.to_thread(decoder.decode, frame)
            except Exception:
                log.exception("camera QR scan failed", extra={"lock": door.lock_id})
                continue
            refused = decoder.counters["refused"]
            if refused:
                self.counters["camera_codes_refused"] = refused
            for code in codes:
                await self.present_code(door.lock_id, code, "camera")

    def _today(self, now: float) -> dt.date:
        return dt.datetime.fromtimestamp(now, dt.UTC).astimezone(_CHINA).date()

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000

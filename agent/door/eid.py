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
import dataclasses
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.door.card import CardVisit
from agent.door.decision import (
    SAY_SEE_HOST,
    Presentation,
    deny,
)
from agent.door.doors import DoorDevices, FlowSettings, Record, VisitOutcome
from agent.door.eidresult import EidAnswer, read_result
from agent.door.opening import DoorOpener
from agent.door.recorder import VisitRecorder
from agent.door.records import checkin_verified_eid, door_opened, iso
from agent.face import FaceWorker
from agent.grants.model import VerifiedGuest
from agent.grants.store import GrantStore
from agent.state.clock import ClockGuard
from drivers.camera.sources import FrameSource
from drivers.qr.camera import FrameDecoder

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
    scan_doors: frozenset[str] = frozenset()  # doors whose camera is searched for codes


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
            if future is not None and future.done():  # the wait just ended (timed out)
                future = None
                self._closed[request_id] = None
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


class EidVisit:
    """One electronic-ID presentation at a door: request, bounded wait, then the card rules."""

    def __init__(
        self,
        *,
        grants: GrantStore,
        clock: ClockGuard,
        settings: FlowSettings,
        eid: EidSettings,
        opener: DoorOpener,
        recorder: VisitRecorder,
        faces: CardVisit,
        face: FaceWorker | None,
        requests: PendingRequests,
        link_up: Callable[[], bool],
        count: Callable[[str], None],
    ) -> None:
        if not 0 < eid.answer_timeout_s <= MAX_ANSWER_TIMEOUT_S:
            raise ValueError(f"answer_timeout_s must be in (0, {MAX_ANSWER_TIMEOUT_S:g}]")
        self._grants = grants
        self._clock = clock
        self._settings = settings
        self._eid = eid
        self._opener = opener
        self._recorder = recorder
        self._faces = faces
        self._face = face
        self._requests = requests
        self._link_up = link_up
        self._count = count

    async def visit(self, door: DoorDevices, code: str) -> VisitOutcome:
        """The code ``code`` read at ``door`` (already checked and not seen before)."""
        started = time.perf_counter()
        deadline = time.monotonic() + self._eid.answer_timeout_s
        at = self._clock.now()
        if not self._link_up():
            self._count("eid_no_link")
            return await self._refuse(door, "eid_unavailable", started, error="no link")
        crop = await asyncio.to_thread(self._face_crop, door, deadline)
        if crop is None:
            return await self._refuse(door, "eid_no_face", started)
        request_id = str(uuid.uuid4())
        body = {
            "request_id": request_id,
            "lock": door.lock_id,
            "code": code,
            "live_jpeg_b64": base64.b64encode(crop).decode("ascii"),
            "at": iso(at),
            "answer_by": iso(at + self._eid.answer_timeout_s),
        }
        waiting = self._requests.open(request_id)
        try:
            await asyncio.to_thread(self._recorder.commit, [("eid.verify", body)])
            result = await asyncio.wait_for(waiting, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self._requests.close(request_id)  # before the refusal: a result now is late
            self._count("eid_unanswered")
            return await self._refuse(
                door, "eid_unavailable", started, request_id, error="no answer by answer_by"
            )
        except Exception as exc:  # the request could not be recorded: fail secure
            self._requests.close(request_id)
            log.error("eid.verify not recorded", extra={"lock": door.lock_id, "error": str(exc)})
            return await self._refuse(door, "eid_unavailable", started, error="not recorded")
        finally:
            # Whatever happened (also a cancelled visit), a result from now on is late.
            self._requests.close(request_id)
        answer = read_result(result, _today(self._clock.now()))
        if not answer.verified or answer.identity is None:
            if answer.error.startswith("identity_invalid"):
                self._count("eid_identity_invalid")
                log.warning(
                    "eid.result identity refused",
                    extra={"lock": door.lock_id, "error": answer.error},
                )
            return await self._refuse(door, "eid_failed", started, request_id, error=answer.error)
        return await self._decide_and_open(door, answer, crop, request_id, started)

    async def _decide_and_open(
        self, door: DoorDevices, answer: EidAnswer, crop: bytes, request_id: str, started: float
    ) -> VisitOutcome:
        identity = answer.identity
        assert identity is not None
        number = identity.id_number
        candidates: list[VerifiedGuest] = await asyncio.to_thread(
            self._grants.guests_for_card, number
        )
        presentation = Presentation(lock=door.lock_id, kind="card", id_number=number)
        decision = self._faces.decide(presentation, candidates)
        face_result: Any = None
        liveness_doc: dict[str, Any] = {"mode": "off"}
        if decision.needs_face and decision.guest is not None:
            face, face_result, liveness_doc = await self._faces.check_face(
                door, decision.guest, decision.liveness, None
            )
            presentation = Presentation(lock=door.lock_id, kind="card", id_number=number, face=face)
            decision = self._faces.decide(presentation, candidates)
        if not decision.granted:
            return await self._opener.refuse(
                door,
                decision,
                started,
                id_number=number,
                method="eid",
                face_result=face_result,
                detail={"eid_request_id": request_id},
            )
        guest = decision.guest
        assert guest is not None
        now = self._clock.now()
        records: list[Record] = []
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
        factors = tuple("eid" if f == "id_card" else f for f in decision.factors)
        decision = dataclasses.replace(decision, reason=f"eid_{decision.reason}", factors=factors)
        records.append(
            (
                "door.opened",
                door_opened(
                    lock=door.lock_id, method=list(factors), at=now, grant_id=guest.grant_id
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

    async def _refuse(
        self,
        door: DoorDevices,
        reason: str,
        started: float,
        request_id: str | None = None,
        *,
        error: str | None = None,
    ) -> VisitOutcome:
        detail: dict[str, Any] = {}
        if request_id is not None:
            detail["eid_request_id"] = request_id
        if error:
            detail["error"] = error[:200]
        return await self._opener.refuse(
            door, deny(reason, SAY_SEE_HOST), started, id_number=None, method="eid", detail=detail
        )

    def _face_crop(self, door: DoorDevices, deadline: float) -> bytes | None:
        """The first usable face crop from the door camera, within ``face_wait_s`` (blocking)."""
        face, camera = self._face, door.camera
        if face is None or camera is None:
            return None
        give_up = min(deadline, time.monotonic() + self._eid.face_wait_s)
        while time.monotonic() < give_up:
            frame = camera.read()
            if frame is None:
                continue
            made = face.live_face(frame, max(0.05, give_up - time.monotonic()))
            if isinstance(made, bytes):
                return made
        return None


class CameraCodeScan:
    """Looks for codes in the frames of the doors configured for it, while they are idle."""

    def __init__(
        self,
        doors: list[DoorDevices],
        busy: Callable[[str], bool],
        present: Callable[[str, str, str], Awaitable[object]],
        interval_s: float,
    ) -> None:
        self._doors = [d for d in doors if d.camera is not None]
        self._busy = busy
        self._present = present
        self._interval = interval_s
        self._tasks: list[asyncio.Task[None]] = []
        self.decoders = {d.lock_id: FrameDecoder() for d in self._doors}

    def start(self) -> None:
        """Start one scanning task per door (call on the loop)."""
        self._tasks = [asyncio.create_task(self._scan(d)) for d in self._doors]

    def stop(self) -> None:
        """Stop scanning."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    @property
    def running(self) -> bool:
        """True while every scanning task runs."""
        return all(not task.done() for task in self._tasks)

    async def _scan(self, door: DoorDevices) -> None:
        camera = door.camera
        assert camera is not None
        decoder = self.decoders[door.lock_id]
        while True:
            await asyncio.sleep(self._interval)
            if self._busy(door.lock_id):
                continue
            try:
                frame = await asyncio.to_thread(camera.read)
                codes = [] if frame is None else await asyncio.to_thread(decoder.decode, frame)
            except Exception:
                log.exception("camera QR scan failed", extra={"lock": door.lock_id})
                continue
            for code in codes:
                await self._present(door.lock_id, code, "camera")


def _today(now: float) -> dt.date:
    return dt.datetime.fromtimestamp(now, dt.UTC).astimezone(_CHINA).date()

"""The door flow: every door's visits, wired from one piece per job.

Runs on the daemon's asyncio loop. Device threads hand their events over with
``call_soon_threadsafe``; anything that blocks (the store, face inference, the
camera, the bus) runs in a worker thread, so one door's slow face never holds up
another door, the link or the watchdog. One presentation at a time per door; a
card presented while the door is busy is refused as ``busy`` rather than queued.

The pieces: :mod:`agent.door.card` (card visits), :mod:`agent.door.pin` (PIN
visits and the lockout), :mod:`agent.door.lockevents` (lock events as records),
:mod:`agent.door.opening` (record first, then unlock, feedback),
:mod:`agent.door.recorder` (the records and their transaction),
:mod:`agent.door.occupancy` (faces counted while a door is open) and
:mod:`agent.door.eid` (electronic-ID codes: the one visit that waits on the platform).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from agent.door.alerts import AlertRules
from agent.door.card import CardVisit
from agent.door.decision import SAY_SEE_HOST, Decision, deny
from agent.door.doors import DoorDevices, FlowSettings, VisitOutcome
from agent.door.eid import CameraCodeScan, EidSettings, EidVisit, PendingRequests
from agent.door.lockevents import AnyLockEvent, lock_event_records
from agent.door.occupancy import OccupantWatch
from agent.door.opening import DoorOpener
from agent.door.pin import PinVisit
from agent.door.recorder import VisitRecorder
from agent.door.records import door_opened, iso
from agent.face import FaceWorker
from agent.grants.store import GrantStore
from agent.state.clock import ClockGuard
from agent.state.lockouts import PinLockouts
from agent.state.store import Store
from agent.sync.outbox import Outbox
from drivers.idcard.reader import CardRead
from drivers.osdp.events import BusStatus, KeypadEntry
from drivers.qr.dedup import SeenCodes

log = logging.getLogger(__name__)


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
        eid: EidSettings | None = None,
        eid_requests: PendingRequests | None = None,
        link_up: Callable[[], bool] = lambda: False,
    ) -> None:
        """``eid`` and ``eid_requests`` enable the electronic-ID visit; ``link_up`` says
        whether the platform link is up (that visit refuses at once without it)."""
        self._clock = clock
        self._rules = rules
        self._doors = {d.lock_id: d for d in doors}
        self._by_address = {(d.bus_name, d.address): d for d in doors}
        self._busy = {d.lock_id: asyncio.Lock() for d in doors}
        self.counters: dict[str, int] = {}
        # Observers of every presentation's outcome (recent outcomes for status, metrics);
        # they must not raise.
        self.outcome_observers: list[Callable[[VisitOutcome], None]] = []
        self.recorder = VisitRecorder(store, outbox, grants, rules)
        occupants = OccupantWatch(
            face,
            rules,
            clock.now,
            lambda records: self.recorder.commit(records),
            settings.face_timeout_s,
        )
        self._opener = DoorOpener(self.recorder, occupants, clock.now, self._count)
        self._pin = PinVisit(
            grants=grants,
            clock=clock,
            settings=settings,
            opener=self._opener,
            lockouts=PinLockouts(store, grants.row_macs),
        )
        self._pin.load(list(self._doors))
        self._card = CardVisit(
            grants=grants,
            face=face,
            clock=clock,
            settings=settings,
            opener=self._opener,
            history=self._pin.history,
            card_photo_image=card_photo_image,
        )
        eid = eid or EidSettings()
        self._seen_codes = SeenCodes(eid.code_lifetime_s)
        self._eid: EidVisit | None = None
        if eid_requests is not None:
            self._eid = EidVisit(
                grants=grants,
                clock=clock,
                settings=settings,
                eid=eid,
                opener=self._opener,
                recorder=self.recorder,
                faces=self._card,
                face=face,
                requests=eid_requests,
                link_up=link_up,
                count=self._count,
            )
        self.code_scan = CameraCodeScan(
            [d for d in doors if d.lock_id in eid.scan_doors],
            self.busy,
            self.present_code,
            eid.camera_scan_interval_s,
        )

    @property
    def face_observers(self) -> list[Callable[[float], None]]:
        """Observers of each face check's latency in ms (metrics); they must not raise."""
        return self._card.face_observers

    # -- entry points (on the loop) ---------------------------------------------------

    async def present_card(self, lock_id: str, card: CardRead) -> VisitOutcome:
        """A card was read at ``lock_id``'s reader."""
        door, busy = self._doors[lock_id], self._busy[lock_id]
        if busy.locked():
            self._count("busy")
            return self._done(await self._refuse(door, deny("busy", SAY_SEE_HOST), "card"))
        async with busy:
            try:
                return self._done(await self._card.visit(door, card))
            except RuntimeError as exc:
                # No worker thread could be started for the visit: the door stays locked,
                # and the refusal is still recorded and shown (recorded in the loop).
                self._count("busy")
                log.error("visit could not be served", extra={"lock": lock_id, "error": str(exc)})
                return self._done(await self._refuse(door, deny("busy", SAY_SEE_HOST), "card"))

    async def present_code(self, lock_id: str, code: str, source: str) -> VisitOutcome | None:
        """An electronic-ID code read at ``lock_id`` (``source``: ``scanner`` or ``camera``).

        None when it is not acted on: the same code again within its lifetime, or a
        code the camera sees while the door is busy (read again once it is free).
        """
        door, busy = self._doors[lock_id], self._busy[lock_id]
        if busy.locked():
            if source == "camera":
                return None
            self._count("busy")
            return self._done(await self._refuse(door, deny("busy", SAY_SEE_HOST), "eid"))
        if not self._seen_codes.first_time(code, time.monotonic()):
            self._count("eid_repeated_code")
            return None
        self._count(f"eid_codes_{source}")
        if self._eid is None:
            return self._done(
                await self._refuse(door, deny("eid_not_enabled", SAY_SEE_HOST), "eid")
            )
        async with busy:
            return self._done(await self._eid.visit(door, code))

    def busy(self, lock_id: str) -> bool:
        """True while a visit is in progress at ``lock_id``."""
        return self._busy[lock_id].locked()

    async def keypad(self, lock_id: str, digits: str) -> VisitOutcome | None:
        """Keys typed at the lock; a PIN ends with ``#`` (``*`` clears)."""
        pin = self._pin.typed(lock_id, digits)
        if pin is None:
            return None
        async with self._busy[lock_id]:
            return self._done(await self._pin.visit(self._doors[lock_id], pin))

    async def remote_unlock(self, lock_id: str, seconds: float, reason: str) -> VisitOutcome:
        """The platform's ``lock.unlock``: recorded first, then carried out."""
        door = self._doors.get(lock_id)
        if door is None:
            raise KeyError(lock_id)
        started = time.perf_counter()
        now = self._clock.now()
        body = door_opened(lock=lock_id, method=["remote"], at=now, remote=reason)
        decision = Decision(True, "remote", "")
        return self._done(
            await self._opener.admit(
                door, decision, [("door.opened", body)], started, now=now, seconds=seconds
            )
        )

    async def lock_event(self, bus_name: str, event: AnyLockEvent) -> None:
        """A driver event: door states and lock status become events, some also alerts."""
        door = self._by_address.get((bus_name, getattr(event, "address", -1)))
        if door is None:
            if not isinstance(event, BusStatus):
                self._count("events_unknown_lock")
            return
        if isinstance(event, KeypadEntry):
            await self.keypad(door.lock_id, event.digits)
            return
        records = lock_event_records(self._rules, door.lock_id, iso(self._clock.now()), event)
        if records:
            await asyncio.to_thread(self.recorder.commit, records)

    def door_ids(self) -> list[str]:
        """The configured lock ids."""
        return list(self._doors)

    # -- bookkeeping ------------------------------------------------------------------------

    async def _refuse(self, door: DoorDevices, decision: Decision, method: str) -> VisitOutcome:
        return await self._opener.refuse(
            door, decision, time.perf_counter(), id_number=None, method=method
        )

    def _done(self, outcome: VisitOutcome) -> VisitOutcome:
        self._count("granted" if outcome.granted else f"denied_{outcome.reason}")
        for observe in self.outcome_observers:
            try:
                observe(outcome)
            except Exception:
                log.exception("outcome observer failed")
        return outcome

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

"""How a visit ends: its records committed first, then the door unlocked (or not), feedback.

If the lock does not take the command, ``door.unlock_failed`` follows the already
committed opening, so the platform learns that the recorded opening did not happen.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from agent.door.decision import SAY_SEE_HOST, Decision, deny
from agent.door.doors import DoorDevices, LockPort, Record, VisitOutcome, elapsed_ms
from agent.door.occupancy import OccupantWatch
from agent.door.recorder import VisitRecorder
from agent.door.records import iso
from agent.state.reserve import is_disk_full
from drivers.osdp.bus import LockOffline

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long an unlock waits for a lock that is offline for a moment (the guest is at the door).
UNLOCK_RETRY_S = 2.0


class DoorOpener:
    """Ends visits: admits (record, unlock, feedback) or refuses (record, feedback)."""

    def __init__(
        self,
        recorder: VisitRecorder,
        occupants: OccupantWatch,
        now: Callable[[], float],
        count: Callable[[str], None],
    ) -> None:
        self._recorder = recorder
        self._occupants = occupants
        self._now = now
        self._count = count

    async def admit(
        self,
        door: DoorDevices,
        decision: Decision,
        records: list[Record],
        started: float,
        *,
        now: float,
        seconds: float | None = None,
        checkin: tuple[str, str, float] | None = None,
        id_number: str | None = None,
    ) -> VisitOutcome:
        """Commit the opening's records, then unlock.

        While the disk is full (the reserve was released and space has not returned) the
        door stays locked: the reserve is kept for refusals and alerts, and the refusal
        (``disk_full``) is recorded instead. ``id_number``: what was presented, for it."""
        grant_id = decision.guest.grant_id if decision.guest is not None else None
        if self._recorder.disk_full:
            presented = next(b["method"][0] for t, b in records if t == "door.opened")
            return await self.refuse(
                door,
                deny("disk_full", SAY_SEE_HOST, decision.guest),
                started,
                id_number=id_number,
                method=presented,
            )
        seqs = await self._commit_or_nothing(door, records, checkin)
        if seqs is None:
            await self.feedback(door, granted=False)
            return VisitOutcome(
                door.lock_id, False, "disk_full", SAY_SEE_HOST, (), elapsed_ms(started)
            )
        opened_seq = next(
            (s for s, (t, _) in zip(seqs, records, strict=True) if t == "door.opened"), None
        )
        await self.open(
            door, door.unlock_seconds if seconds is None else seconds, now, grant_id, opened_seq
        )
        log.info(
            "door opened",
            extra={"lock": door.lock_id, "grant_id": grant_id, "method": decision.reason},
        )
        return VisitOutcome(
            door.lock_id, True, decision.reason, decision.say, seqs, elapsed_ms(started)
        )

    async def refuse(
        self,
        door: DoorDevices,
        decision: Decision,
        started: float,
        *,
        id_number: str | None,
        method: str,
        face_result: Any = None,
        card_names: tuple[str, ...] = (),
        detail: dict[str, Any] | None = None,
        alerts: list[Record] | None = None,
    ) -> VisitOutcome:
        """Commit the refusal with its alerts (the rules', and ``alerts`` of the caller's
        own; ``detail`` joins ``access.denied``); the denied LED."""
        records = list(alerts or []) + self._recorder.refusal(
            door.lock_id,
            decision,
            self._now(),
            id_number=id_number,
            method=method,
            face_result=face_result,
            card_names=card_names,
            detail=detail,
        )
        seqs = await self._commit_or_nothing(door, records) or ()
        await self.feedback(door, granted=False)
        log.info("access denied", extra={"lock": door.lock_id, "reason": decision.reason})
        return VisitOutcome(
            door.lock_id, False, decision.reason, decision.say, seqs, elapsed_ms(started)
        )

    async def _commit_or_nothing(
        self,
        door: DoorDevices,
        records: list[Record],
        checkin: tuple[str, str, float] | None = None,
    ) -> tuple[int | None, ...] | None:
        """Commit ``records``; None when not even the reserve had room (the visit's
        records are lost to a full disk: said in the log, the door stays locked)."""
        try:
            return await off_loop(self._recorder.commit, records, checkin)
        except (sqlite3.Error, OSError) as exc:
            if not is_disk_full(exc):
                raise
        self._count("records_lost_disk_full")
        log.error(
            "disk full and the reserve spent: a visit's records could not be written; "
            "the door stays locked",
            extra={"lock": door.lock_id, "records": len(records)},
        )
        return None

    async def open(
        self,
        door: DoorDevices,
        seconds: float,
        now: float,
        grant_id: str | None,
        opened_seq: int | None = None,
    ) -> None:
        """Unlock ``door`` (its opening is already recorded at ``opened_seq``), then
        feedback and counting; the unlock intent is cleared either way."""
        if door.bus is None:
            await off_loop(self._unlock_failed, door, now, "no lock bus configured", opened_seq)
            return
        try:
            await _unlock_with_retry(door.bus, door.address, seconds)
        except Exception as exc:
            log.error(
                "unlock failed after the record", extra={"lock": door.lock_id, "error": str(exc)}
            )
            await off_loop(self._unlock_failed, door, now, str(exc), opened_seq)
            return
        if opened_seq is not None:
            await off_loop(self._recorder.unlocked, opened_seq)
        await self.feedback(door, granted=True)
        self._occupants.opened(door, seconds, grant_id)

    async def feedback(self, door: DoorDevices, *, granted: bool) -> None:
        """LED and buzzer; a failure is logged, never raised (the decision stands)."""
        if door.bus is None:
            return
        try:
            await off_loop(door.bus.feedback, door.address, granted)
        except Exception as exc:
            log.warning(
                "feedback failed",
                extra={"lock": door.lock_id, "granted": granted, "error": str(exc)},
            )

    def _unlock_failed(
        self, door: DoorDevices, now: float, error: str, opened_seq: int | None
    ) -> None:
        self._count("unlock_failed")
        self._recorder.unlock_failed(door.lock_id, iso(now), error, opened_seq)


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn`` on the loop's bounded executor; when no worker thread can be
    started (the process is at its task limit), run it here, blocking the loop briefly:
    a refusal is recorded and shown even then. ``fn`` never runs twice: only the
    submission's failure falls back."""
    loop = asyncio.get_running_loop()
    try:
        future = loop.run_in_executor(None, functools.partial(fn, *args))
    except RuntimeError as exc:
        log.error("no worker thread; running in the loop", extra={"error": str(exc)})
        return fn(*args)
    return await future


async def _unlock_with_retry(bus: LockPort, address: int, seconds: float) -> None:
    """Unlock; a lock that is offline for a moment (a missed poll) gets a short grace."""
    deadline = time.monotonic() + UNLOCK_RETRY_S
    while True:
        try:
            await off_loop(bus.unlock, address, seconds)
            return
        except LockOffline:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.1)

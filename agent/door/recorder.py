"""Records of door visits: committed to the outbox in one transaction, before any unlock.

Record before unlock: a visit's records (``checkin.verified`` for a guest's first
verified entry, ``door.opened``, or ``access.denied`` with its alerts) are committed
together with the guest's checked-in mark; only then does the caller unlock.

Every ``door.opened`` commits an unlock intent in the same transaction; the lock's
confirmation clears it, and so does a recorded ``door.unlock_failed``. Intents
left at start (the process died between record and unlock) become
``door.unlock_failed`` with reason ``gateway_restart``, so no recorded opening that
did not happen stays unanswered.
"""

from __future__ import annotations

import base64
import logging
import sqlite3
import time
from typing import Any

from agent.door.alerts import AlertRules
from agent.door.decision import Decision
from agent.door.doors import Record
from agent.door.records import access_denied, iso
from agent.grants.store import GrantStore
from agent.state.incidents import record_incident
from agent.state.reserve import DiskReserve, is_disk_full
from agent.state.store import Store
from agent.sync.outbox import Outbox
from drivers.idcard.identity import mask_id_number, mask_name

log = logging.getLogger(__name__)


class VisitRecorder:
    """Commits visit records (blocking: call it off the event loop)."""

    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        grants: GrantStore,
        rules: AlertRules,
        reserve: DiskReserve | None = None,
    ) -> None:
        self._store = store
        self._outbox = outbox
        self._grants = grants
        self._rules = rules
        self.reserve = reserve

    @property
    def disk_full(self) -> bool:
        """The reserve was released for a write that found the disk full, and space has not
        returned to take it again: nothing opens (only refusals and alerts are recorded)."""
        return self.reserve is not None and not self.reserve.held

    def commit(
        self, records: list[Record], checkin: tuple[str, str, float] | None = None
    ) -> tuple[int | None, ...]:
        """Enqueue ``records`` (and mark ``(grant, guest, at)`` checked in) in one transaction.

        Disk full: the reserve is released, a ``disk_full`` incident goes into the same
        transaction, and the commit is tried once more; if it still fails it raises (and
        the caller unlocks nothing)."""
        try:
            return self._commit(records, checkin, None)
        except (sqlite3.Error, OSError) as exc:  # OSError: the seq reservation's file
            if not is_disk_full(exc) or self.reserve is None or not self.reserve.release():
                raise
        return self._commit(records, checkin, "a write found the disk full; reserve released")

    def _commit(
        self,
        records: list[Record],
        checkin: tuple[str, str, float] | None,
        incident: str | None,
    ) -> tuple[int | None, ...]:
        with self._store.write() as conn:
            if incident is not None:
                record_incident(conn, "disk_full", incident, iso(time.time()))
            seqs = tuple(self._outbox.enqueue_in(conn, t, b) for t, b in records)
            for seq, (msg_type, body) in zip(seqs, records, strict=True):
                if msg_type == "door.opened" and seq is not None:
                    conn.execute(
                        "INSERT INTO unlock_intents (seq, lock, created_at) VALUES (?, ?, ?)",
                        (seq, body["lock"], time.time()),
                    )
            if checkin is not None:
                # The mark carries the seq of its checkin.verified record, under one MAC.
                seq = next(
                    (
                        q
                        for q, (t, _b) in zip(seqs, records, strict=True)
                        if t == "checkin.verified"
                    ),
                    None,
                )
                self._grants.mark_checked_in(conn, *checkin, seq=seq)
        self._outbox.notify()
        return seqs

    def unlocked(self, opened_seq: int) -> None:
        """The lock confirmed the unlock of the opening recorded at ``opened_seq``."""
        with self._store.write() as conn:
            conn.execute("DELETE FROM unlock_intents WHERE seq = ?", (opened_seq,))

    def unlock_failed(
        self, lock: str, at: str, error: str, opened_seq: int | None, reason: str = "lock_error"
    ) -> int | None:
        """Record that an opening did not happen (and clear its intent), in one transaction."""
        body: dict[str, Any] = {"lock": lock, "at": at, "error": error[:200], "reason": reason}
        if opened_seq is not None:
            body["opened_seq"] = opened_seq
        with self._store.write() as conn:
            seq = self._outbox.enqueue_in(conn, "door.unlock_failed", body)
            if opened_seq is not None:
                conn.execute("DELETE FROM unlock_intents WHERE seq = ?", (opened_seq,))
        self._outbox.notify()
        return seq

    def fail_interrupted(self, now: float) -> int:
        """At start: every intent left is an opening that never happened; how many."""
        with self._store.write() as conn:
            rows = conn.execute("SELECT seq, lock FROM unlock_intents ORDER BY seq").fetchall()
            for opened_seq, lock in rows:
                self._outbox.enqueue_in(
                    conn,
                    "door.unlock_failed",
                    {
                        "lock": lock,
                        "at": iso(now),
                        "error": "the gateway stopped between the record and the unlock",
                        "reason": "gateway_restart",
                        "opened_seq": int(opened_seq),
                    },
                )
            conn.execute("DELETE FROM unlock_intents")
        if rows:
            self._outbox.notify()
            log.error(
                "recorded openings that never happened reported as door.unlock_failed",
                extra={"count": len(rows)},
            )
        return len(rows)

    def refusal(
        self,
        lock: str,
        decision: Decision,
        now: float,
        *,
        id_number: str | None,
        method: str,
        face_result: Any = None,
        card_names: tuple[str, ...] = (),
        detail: dict[str, Any] | None = None,
    ) -> list[Record]:
        """The records of a refusal: the warning rules' alerts, then ``access.denied``."""
        at = iso(now)
        records: list[Record] = []
        if decision.reason == "face_mismatch" and decision.guest is not None:
            records += self._rules.on_identity_mismatch(
                lock, at, _mismatch_evidence(decision, id_number, face_result)
            )
        if decision.reason == "name_mismatch" and decision.guest is not None:
            records += self._rules.on_identity_mismatch(
                lock, at, _name_evidence(decision, id_number, card_names)
            )
        if decision.reason == "no_grant" and id_number:
            records += self._rules.on_unknown_card(
                lock, at, now, self._grants.id_hash(id_number), mask_id_number(id_number)
            )
        records += self._rules.on_denial(lock, at, now, decision.reason)
        records.append(
            (
                "access.denied",
                access_denied(
                    lock=lock, reason=decision.reason, at=now, id_number=id_number, method=method
                )
                | (detail or {}),
            )
        )
        return records


def _name_evidence(
    decision: Decision, id_number: str | None, card_names: tuple[str, ...]
) -> dict[str, Any]:
    """The card's and the grant's names, masked (the alert is sealed; logs never see them)."""
    assert decision.guest is not None
    return {
        "grant_id": decision.guest.grant_id,
        "guest_id": decision.guest.guest_id,
        "mismatch": "name",
        "face_distance": None,
        "face_threshold": None,
        "id_number_masked": mask_id_number(id_number) if id_number else None,
        "card_name_masked": [mask_name(n) for n in card_names if n],
        "grant_name_masked": mask_name(decision.guest.name),
    }


def _mismatch_evidence(
    decision: Decision, id_number: str | None, face_result: Any
) -> dict[str, Any]:
    assert decision.guest is not None
    distance = None if face_result is None else face_result.distance
    evidence: dict[str, Any] = {
        "grant_id": decision.guest.grant_id,
        "guest_id": decision.guest.guest_id,
        "face_threshold": float(face_result.threshold) if face_result is not None else None,
        "face_distance": None if distance is None else float(distance),
        "id_number_masked": mask_id_number(id_number) if id_number else None,
    }
    if face_result is not None and face_result.face_jpeg:
        evidence["live_jpeg_b64"] = base64.b64encode(face_result.face_jpeg).decode("ascii")
    return evidence

"""Records of door visits: committed to the outbox in one transaction, before any unlock.

Record before unlock: a visit's records (``checkin.verified`` for a guest's first
verified entry, ``door.opened``, or ``access.denied`` with its alerts) are committed
together with the guest's checked-in mark; only then does the caller unlock.
"""

from __future__ import annotations

import base64
from typing import Any

from agent.door.alerts import AlertRules
from agent.door.decision import Decision
from agent.door.doors import Record
from agent.door.records import access_denied, iso
from agent.grants.store import GrantStore
from agent.state.store import Store
from agent.sync.outbox import Outbox
from drivers.idcard.identity import mask_id_number, mask_name


class VisitRecorder:
    """Commits visit records (blocking: call it off the event loop)."""

    def __init__(self, store: Store, outbox: Outbox, grants: GrantStore, rules: AlertRules) -> None:
        self._store = store
        self._outbox = outbox
        self._grants = grants
        self._rules = rules

    def commit(
        self, records: list[Record], checkin: tuple[str, str, float] | None = None
    ) -> tuple[int | None, ...]:
        """Enqueue ``records`` (and mark ``(grant, guest, at)`` checked in) in one transaction."""
        with self._store.write() as conn:
            seqs = tuple(self._outbox.enqueue_in(conn, t, b) for t, b in records)
            if checkin is not None:
                self._grants.mark_checked_in(conn, *checkin)
        self._outbox.notify()
        return seqs

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
                ),
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

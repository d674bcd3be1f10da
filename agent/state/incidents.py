"""Gateway incidents: facts about the gateway itself that must reach the platform as alerts
(database recovered, seq resumed, clock moved). No personal data. Every statement on the
``incidents`` table is here."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class Incident:
    """One recorded incident not yet reported."""

    id: int
    kind: str
    detail: str
    at: str


def record_incident(conn: sqlite3.Connection, kind: str, detail: str, at: str) -> None:
    """Remember an incident inside the caller's write transaction."""
    conn.execute("INSERT INTO incidents (kind, detail, at) VALUES (?, ?, ?)", (kind, detail, at))


def unreported_incidents(conn: sqlite3.Connection) -> list[Incident]:
    """Incidents not yet reported, oldest first."""
    rows = conn.execute(
        "SELECT id, kind, detail, at FROM incidents WHERE reported = 0 ORDER BY id"
    ).fetchall()
    return [Incident(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def mark_reported(conn: sqlite3.Connection, incident: Incident) -> None:
    """The incident's alert is committed to the outbox (same transaction)."""
    conn.execute("UPDATE incidents SET reported = 1 WHERE id = ?", (incident.id,))

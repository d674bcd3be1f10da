"""Versioned schema migrations, applied in order at start.

The version lives in ``PRAGMA user_version``. Versions are contiguous from 1;
a migration is never edited once released, only followed by a new one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One schema step: SQL run in a single transaction, then ``user_version = version``."""

    version: int
    name: str
    sql: str


MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "base",
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        -- Facts about the gateway itself that must reach the platform as alerts
        -- (a database moved aside as corrupt, a clock jump, ...). Never personal data.
        CREATE TABLE incidents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL,
            at TEXT NOT NULL,
            reported INTEGER NOT NULL DEFAULT 0
        );
        """,
    ),
]

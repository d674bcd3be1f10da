"""The gateway's one SQLite database: durable settings, migrations, recovery.

Opened through sqlite-utils with WAL and ``synchronous=FULL`` so that a
committed transaction survives power loss. One connection is shared by the
daemon's threads behind a re-entrant lock; every write runs in
``BEGIN IMMEDIATE … COMMIT``.

At open, ``PRAGMA integrity_check`` runs. A database that is corrupt (or not a
database at all) is moved aside with its WAL, never deleted (it is evidence),
a fresh one is created, and the fact is recorded in ``incidents`` so that it is
reported to the platform as an alert.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from agent.state.incidents import record_incident
from agent.state.migrations import MIGRATIONS, Migration

log = logging.getLogger(__name__)

DB_FILENAME = "lockgw.db"


class StoreError(Exception):
    """The store cannot be opened or migrated."""


@dataclass(frozen=True)
class Recovery:
    """A corrupt database that was moved aside at open."""

    moved_to: Path
    reason: str


def utc_now_iso() -> str:
    """The current UTC time as RFC 3339 with milliseconds."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class Store:
    """A SQLite database with the schema at the newest version."""

    def __init__(self, path: Path, conn: sqlite3.Connection, recovery: Recovery | None) -> None:
        self.path = path
        self.recovery = recovery
        self._conn = conn
        self._lock = threading.RLock()
        self._after_commit: list[Callable[[], None]] = []
        self.db = sqlite_utils.Database(conn)

    @classmethod
    def open(cls, path: Path, migrations: Sequence[Migration] = MIGRATIONS) -> Store:
        """Open (creating or recovering as needed) and migrate the database at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        recovery: Recovery | None = None
        problem = _check_integrity(path) if path.exists() else None
        if problem is not None:
            recovery = _move_aside(path, problem)
            log.error(
                "database failed its integrity check and was moved aside",
                extra={"moved_to": str(recovery.moved_to), "reason": problem},
            )
        conn = _connect(path)
        store = cls(path, conn, recovery)
        store._migrate(migrations)
        if recovery is not None:
            store.record_incident(
                "store_recovered", f"corrupt database moved to {recovery.moved_to.name}: {problem}"
            )
        return store

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``), committed durably on success."""
        with self._lock:
            self._after_commit = []
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                self._after_commit = []
                raise
            self._conn.execute("COMMIT")
            callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the write transaction in progress commits (never on rollback).

        Only inside :meth:`write`, from the thread that holds it.
        """
        self._after_commit.append(callback)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads, held exclusively for the block."""
        with self._lock:
            yield self._conn

    def schema_version(self) -> int:
        """The ``user_version`` the schema is at."""
        with self.read() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def table_counts(self) -> dict[str, int]:
        """Row counts of every table, for status displays."""
        with self.read() as conn:
            return _table_counts(conn)

    def record_incident(self, kind: str, detail: str) -> None:
        """Remember a gateway fact that must be reported as an alert (no personal data)."""
        with self.write() as conn:
            record_incident(conn, kind, detail, utc_now_iso())

    def close(self) -> None:
        """Checkpoint the WAL and close; waits for a write in progress to finish."""
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        expected = list(range(1, len(migrations) + 1))
        if [m.version for m in migrations] != expected:
            raise StoreError("migrations must be numbered 1, 2, 3, … without gaps")
        current = self.schema_version()
        if current > len(migrations):
            raise StoreError(
                f"database schema version {current} is newer than this lockgw knows "
                f"({len(migrations)}); refusing to run an older version against it"
            )
        for migration in migrations[current:]:
            with self.write() as conn:
                for statement in _split_sql(migration.sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {migration.version}")
            log.info(
                "schema migrated", extra={"version": migration.version, "migration": migration.name}
            )


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in write()).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _check_integrity(path: Path) -> str | None:
    """None when the database is sound, else a short description of the problem."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return f"not readable as a database ({exc})"
    verdict = [str(r[0]) for r in rows]
    return None if verdict == ["ok"] else "integrity_check: " + "; ".join(verdict[:3])


def _move_aside(path: Path, reason: str) -> Recovery:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    return Recovery(moved_to=target, reason=reason)


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (``sqlite3.complete_statement`` aware)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


@dataclass(frozen=True)
class StoreSummary:
    """What ``lockgw status`` shows of the database."""

    schema_version: int
    tables: dict[str, int]


def read_summary(path: Path) -> StoreSummary:
    """Schema version and row counts, read-only (never migrates, never moves aside)."""
    if not path.exists():
        raise FileNotFoundError(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        return StoreSummary(schema_version=version, tables=_table_counts(conn))
    finally:
        conn.close()


def _table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    names = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    return {n: int(conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in names}

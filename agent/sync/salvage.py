"""Salvage the unacknowledged records of a moved-aside database into the live outbox.

A database found corrupt at start is moved aside (:mod:`agent.state.store`) and the
outbox counter resumes above the seq reservation, leaving a pending gap. This
reads what it can of the old file's ``outbox`` table and puts each record
above the old ``acked_through`` back with its original seq and its sealed text
unchanged (the seq is inside the signed body, so the platform deduplicates it
as usual); then, unless told otherwise, what is still missing is declared lost
(``outbox.dropped``, reason ``database_lost``).

Reading: SQLite's own recovery, ``sqlite3 FILE .recover`` (the command-line
shell, Debian package ``sqlite3``), which rebuilds every row it finds on
readable pages; it needs a shell built with the ``sqlite_dbpage`` table
(Debian 12's 3.40.1 is not: there it rebuilds nothing, which is detected).
Otherwise Python's ``sqlite3`` reads row by row and skips what raises (rows on
a damaged page, and rows whose sealed text is not a well-formed JWE). Both
work on a copy, so the evidence is unchanged.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import re
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.sync.outbox import Outbox, SalvagedRow

log = logging.getLogger(__name__)

_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")


class SalvageError(Exception):
    """The file cannot be read at all."""


@dataclass(frozen=True)
class SalvageReport:
    """What one salvage found and did (no personal data: the records stay sealed)."""

    method: str
    found: int
    unreadable: int
    old_acked_through: int
    old_last_seq: int
    restored: int
    declared: int


def salvage(outbox: Outbox, lost_db: Path, *, declare: bool = True) -> SalvageReport:
    """Restore what ``lost_db`` still holds into ``outbox``; then declare the rest."""
    rows, unreadable, acked, last, method = read_lost_outbox(lost_db)
    pending = [r for r in rows if r.seq > acked]
    restored = outbox.insert_salvaged(pending, acked_through=acked)
    declared = outbox.declare_due_gaps(force=True) if declare else 0
    report = SalvageReport(method, len(rows), unreadable, acked, last, restored, declared)
    log.warning(
        "outbox salvaged from a moved-aside database",
        extra={"file": lost_db.name, **report.__dict__},
    )
    return report


def read_lost_outbox(path: Path) -> tuple[list[SalvagedRow], int, int, int, str]:
    """(rows, unreadable rows, old acked_through, old last_seq, method) of ``path``."""
    if not path.is_file():
        raise SalvageError(f"{path}: no such file")
    with tempfile.TemporaryDirectory(prefix="lockgw-salvage-", dir=path.parent) as tmp:
        copy = Path(tmp) / "lost.db"
        shutil.copyfile(path, copy)
        for suffix in ("-wal",):
            side = path.with_name(path.name + suffix)
            if side.exists():
                shutil.copyfile(side, copy.with_name(copy.name + suffix))
        shell = shutil.which("sqlite3")
        if shell is not None:
            try:
                return (*_read_recovered(shell, copy), "sqlite3 .recover")
            except SalvageError as exc:
                log.warning("sqlite3 .recover failed; reading directly", extra={"error": str(exc)})
        return (*_read_direct(copy), "python sqlite3")


def _read_recovered(shell: str, copy: Path) -> tuple[list[SalvagedRow], int, int, int]:
    try:
        done = subprocess.run(
            [shell, str(copy), ".recover"], capture_output=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SalvageError(f"sqlite3 .recover: {exc}") from None
    if not done.stdout:
        raise SalvageError(f"sqlite3 .recover produced nothing (exit {done.returncode})")
    rebuilt = sqlite3.connect(":memory:")
    try:
        statement = ""
        for line in done.stdout.decode("utf-8", "replace").splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                # A statement the damage garbled is skipped; its rows are lost.
                with contextlib.suppress(sqlite3.Error):
                    rebuilt.execute(statement)
                statement = ""
        # A shell built without the sqlite_dbpage table (Debian's 3.40 is one) prints only
        # the preamble: no outbox table came back, so read the file directly instead.
        if not rebuilt.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'"
        ).fetchone():
            error = done.stderr.decode("utf-8", "replace").strip()[:200]
            raise SalvageError(f"sqlite3 .recover rebuilt no outbox table ({error or 'no error'})")
        return _read_direct_conn(rebuilt)
    finally:
        rebuilt.close()


def _read_direct(copy: Path) -> tuple[list[SalvagedRow], int, int, int]:
    try:
        conn = sqlite3.connect(copy)
    except sqlite3.Error as exc:
        raise SalvageError(f"{copy.name}: {exc}") from None
    try:
        return _read_direct_conn(conn)
    finally:
        conn.close()


def _read_direct_conn(conn: sqlite3.Connection) -> tuple[list[SalvagedRow], int, int, int]:
    try:
        acked, last = conn.execute("SELECT acked_through, last_seq FROM outbox_meta").fetchone()
    except (sqlite3.Error, TypeError):
        acked, last = 0, 0  # the counters' page is lost: every row found is a candidate
    try:
        seqs = [int(r[0]) for r in conn.execute("SELECT seq FROM outbox ORDER BY seq")]
    except sqlite3.Error:
        seqs = _probe_seqs(conn, int(last))
    rows: list[SalvagedRow] = []
    unreadable = 0
    for seq in seqs:
        try:
            found = conn.execute(
                "SELECT type, sealed, created_at FROM outbox WHERE seq = ?", (seq,)
            ).fetchone()
        except sqlite3.Error:
            unreadable += 1
            continue
        if found is None or not _plausible(found[0], found[1]):
            unreadable += 1
            continue
        rows.append(SalvagedRow(seq, str(found[0]), str(found[1]), float(found[2] or 0.0)))
    return rows, unreadable, int(acked or 0), int(last or 0)


def _probe_seqs(conn: sqlite3.Connection, last: int) -> list[int]:
    """Seqs one by one, skipping those whose page raises (the index is damaged)."""
    found = []
    for seq in range(1, last + 1):
        try:
            if conn.execute("SELECT 1 FROM outbox WHERE seq = ?", (seq,)).fetchone():
                found.append(seq)
        except sqlite3.Error:
            continue
    return found


def _plausible(msg_type: object, sealed: object) -> bool:
    """A well-formed record: a message type and a JWE compact text with the contract's header.

    Only the platform can check the ciphertext itself; a record damaged inside it would
    be dropped there, so a garbled header is caught here and the seq declared instead.
    """
    if not isinstance(msg_type, str) or not _TYPE_RE.match(msg_type):
        return False
    if not isinstance(sealed, str):
        return False
    parts = sealed.split(".")
    if len(parts) != 5 or parts[1] != "" or not all(_B64URL_RE.match(p) for p in parts):
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (binascii.Error, ValueError):
        return False
    return (
        isinstance(header, dict)
        and header.get("alg") == "ECDH-ES"
        and header.get("enc") == "A256GCM"
        and header.get("cty") == "JWT"
    )

"""The durable outbox: sealed gateway messages wait here until a ``sync.ack`` covers them.

Every event, alert and ack is sealed to the platform when it is enqueued, in
the same transaction that takes its ``seq`` from the counter row, so the disk
only ever holds ciphertext and a crash cannot leave a seq half-used. Rows
leave only by :meth:`Outbox.ack_through` (the platform's ``sync.ack``) or by
the bound policy below.

Bound (``max_bytes`` of sealed text): when a new message would take the
outbox past it, the oldest *droppable* messages (``door.state``,
``lock.status``: state snapshots that a later message of the same kind
supersedes) are deleted, enough to get back under 95 % of the bound in one
go, and one ``outbox.dropped`` event naming the dropped seq ranges goes out, so
the platform can tell a deliberate drop from a loss. Check-in records, door
openings, denials, alerts and acks are never dropped: if only they remain, the
outbox grows past the bound (it is a soft bound for them; the disk is the hard
one) and a droppable newcomer is refused instead (no seq is used). When the
outbox reaches ``warn_ratio`` of the bound, one ``alert.outbox_near_full`` goes
out; it is re-armed when the outbox falls below 90 % of that level.

Gaps: seq values that will never be sent are announced in the same
``outbox.dropped`` event, with a ``reason``: ``outbox_bound`` for the drops
above, ``database_lost`` for the numbers a lost or moved-aside database used
(the counter resumed above the reservation, :mod:`agent.state.seqfloor`). Such a gap
is kept pending for ``gap_grace_s`` so that ``lockgw outbox salvage`` can put
the old database's unacknowledged records back with their original seq
(:meth:`Outbox.insert_salvaged`); what is still missing is then declared, and
the platform can acknowledge past it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.contract.keys import GatewayKeys, PlatformKeys
from agent.contract.messages import (
    format_time,
    make_envelope,
    topic_kind,
    utc_now,
    validate_gateway_message,
)
from agent.contract.seal import DEFAULT_MAX_BYTES, seal
from agent.state.incidents import record_incident
from agent.state.seqfloor import FILE_NAME as SEQ_FILE
from agent.state.seqfloor import SeqReservation
from agent.state.store import Store

log = logging.getLogger(__name__)

# Requests (a person waits at the door) go before alerts, alerts before acks and events.
PRIORITY = {"req": -1, "alert": 0, "ack": 1, "evt": 2}
DEFAULT_DROPPABLE = frozenset({"door.state", "lock.status"})
_ROW_OVERHEAD = 64  # bytes of bookkeeping per row, counted against the bound
_DROP_TARGET = 0.95
_REARM = 0.9
_RANGES_PER_NOTICE = 2000  # keeps one notice far below the message size limit
GAP_GRACE_S = 3600.0  # how long a lost database's range waits for a salvage


@dataclass(frozen=True)
class OutboxItem:
    """One sealed message ready to publish."""

    seq: int
    kind: str
    type: str
    priority: int
    sealed: str


@dataclass(frozen=True)
class SalvagedRow:
    """A sealed record read back from a lost database (its seq is inside the sealed text)."""

    seq: int
    type: str
    sealed: str
    created_at: float


@dataclass(frozen=True)
class OutboxStats:
    """Depth and progress, no personal data."""

    depth: int
    bytes: int
    last_seq: int
    acked_through: int
    oldest_age_s: float | None


class Outbox:
    """Seal, number, keep and release gateway → platform messages."""

    def __init__(
        self,
        store: Store,
        gateway_id: str,
        gateway_keys: GatewayKeys,
        platform_keys: PlatformKeys,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        warn_ratio: float = 0.8,
        droppable_types: Iterable[str] = DEFAULT_DROPPABLE,
        max_message_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
        gap_grace_s: float = GAP_GRACE_S,
    ) -> None:
        self._store = store
        self._gw = gateway_id
        self._gw_keys = gateway_keys
        self._pf_keys = platform_keys
        self._max_bytes = max_bytes
        self._warn_bytes = int(max_bytes * warn_ratio)
        self._droppable = frozenset(droppable_types)
        self._max_message_bytes = max_message_bytes
        self._clock = clock
        self._gap_grace_s = gap_grace_s
        self._listeners: list[Callable[[], None]] = []
        self._record_observers: list[Callable[[int | None, str, dict[str, Any]], None]] = []
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {
            "enqueued": 0,
            "dropped": 0,
            "refused_at_bound": 0,
            "near_full_alerts": 0,
        }
        self._reservation = SeqReservation(store.path.parent / SEQ_FILE)
        with store.write() as conn:
            last_seq, self._acked_through = (
                int(v)
                for v in conn.execute("SELECT last_seq, acked_through FROM outbox_meta").fetchone()
            )
            floor = self._reservation.floor_for(last_seq)
            if floor is not None:
                # The database lost numbers already used: resume above every one of them.
                conn.execute("UPDATE outbox_meta SET last_seq = ?", (floor,))
                record_incident(
                    conn,
                    "seq_resumed",
                    f"outbox counter was at {last_seq}, below numbers already used; "
                    f"resumed after {floor} (the gap {last_seq + 1}..{floor} was never sent "
                    "from this database)",
                    format_time(utc_now()),
                )
                conn.execute(
                    "INSERT INTO outbox_gaps (first, last, reason, noticed_at)"
                    " VALUES (?, ?, 'database_lost', ?)",
                    (last_seq + 1, floor, self._clock()),
                )
                log.error(
                    "outbox counter below numbers already used; resumed above them",
                    extra={"last_seq": last_seq, "resumed_after": floor},
                )
        self.declare_due_gaps()

    # -- writing -------------------------------------------------------------

    def enqueue(self, msg_type: str, body: dict[str, Any]) -> int | None:
        """Seal and store one message; its seq, or None if refused at the bound."""
        with self._store.write() as conn:
            seq = self.enqueue_in(conn, msg_type, body)
        self.notify()
        return seq

    def enqueue_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[int | None]:
        """Seal and store several messages in one transaction (one fsync)."""
        with self._store.write() as conn:
            seqs = [self.enqueue_in(conn, t, b) for t, b in items]
        self.notify()
        return seqs

    def enqueue_in(
        self, conn: sqlite3.Connection, msg_type: str, body: dict[str, Any]
    ) -> int | None:
        """Enqueue inside the caller's ``store.write()`` transaction; call :meth:`notify` after.

        Raises MessageError for a body that does not fit its type (nothing stored).
        """
        droppable = msg_type in self._droppable
        seq, sealed = self._seal_next(conn, msg_type, body)
        size = len(sealed) + _ROW_OVERHEAD
        total, near_full = conn.execute("SELECT bytes, near_full FROM outbox_meta").fetchone()
        if total + size > self._max_bytes:
            if self._drop_oldest(conn, total + size):
                # The drop notice took the next seq: number and seal this one again.
                seq, sealed = self._seal_next(conn, msg_type, body)
                size = len(sealed) + _ROW_OVERHEAD
                total, near_full = conn.execute(
                    "SELECT bytes, near_full FROM outbox_meta"
                ).fetchone()
            if total + size > self._max_bytes and droppable:
                self.counters["refused_at_bound"] += 1
                log.warning("outbox full: droppable message refused", extra={"type": msg_type})
                return None
        kind = topic_kind(msg_type)
        conn.execute(
            "INSERT INTO outbox (seq, kind, type, priority, sealed, size, created_at, droppable)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, kind, msg_type, PRIORITY[kind], sealed, size, self._clock(), int(droppable)),
        )
        total += size
        conn.execute("UPDATE outbox_meta SET last_seq = ?, bytes = ?", (seq, total))
        self.counters["enqueued"] += 1
        if self._record_observers:
            self._store.after_commit(lambda: self._observe(seq, msg_type, body))
        if total >= self._warn_bytes and not near_full:
            conn.execute("UPDATE outbox_meta SET near_full = 1")
            self.counters["near_full_alerts"] += 1
            log.warning("outbox near full", extra={"bytes": total, "max_bytes": self._max_bytes})
            self.enqueue_in(
                conn,
                "alert.outbox_near_full",
                {"at": format_time(utc_now()), "bytes": total, "max_bytes": self._max_bytes},
            )
        return seq

    def _seal_next(
        self, conn: sqlite3.Connection, msg_type: str, body: dict[str, Any]
    ) -> tuple[int, str]:
        seq = int(conn.execute("SELECT last_seq FROM outbox_meta").fetchone()[0]) + 1
        self._reservation.ensure(seq)
        envelope = make_envelope(msg_type, self._gw, body, seq=seq, now=utc_now())
        validate_gateway_message(envelope)
        sealed = seal(
            envelope,
            self._gw_keys.signing,
            self._pf_keys.encryption,
            max_bytes=self._max_message_bytes,
        )
        return seq, sealed

    def _drop_oldest(self, conn: sqlite3.Connection, needed_total: int) -> bool:
        """Delete oldest droppable rows down to 95 % of the bound; True if any went."""
        target = int(self._max_bytes * _DROP_TARGET)
        total = needed_total
        dropped: list[tuple[int, str, int]] = []
        for seq, msg_type, size in conn.execute(
            "SELECT seq, type, size FROM outbox WHERE droppable = 1 ORDER BY seq"
        ):
            if total <= target:
                break
            dropped.append((seq, msg_type, size))
            total -= size
        if not dropped:
            return False
        conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s, _, _ in dropped])
        conn.execute("UPDATE outbox_meta SET bytes = bytes - ?", (sum(d[2] for d in dropped),))
        self.counters["dropped"] += len(dropped)
        log.warning(
            "outbox at its bound: oldest droppable messages dropped",
            extra={"count": len(dropped), "first_seq": dropped[0][0], "last_seq": dropped[-1][0]},
        )
        ranges = _ranges([s for s, _, _ in dropped])
        for start in range(0, len(ranges), _RANGES_PER_NOTICE):
            chunk = ranges[start : start + _RANGES_PER_NOTICE]
            chunk_types: dict[str, int] = {}
            for seq, msg_type, _ in dropped:
                if chunk[0][0] <= seq <= chunk[-1][1]:
                    chunk_types[msg_type] = chunk_types.get(msg_type, 0) + 1
            notice = {
                "at": format_time(utc_now()),
                "seqs": chunk,
                "count": sum(b - a + 1 for a, b in chunk),
                "types": chunk_types,
                "reason": "outbox_bound",
            }
            self.enqueue_in(conn, "outbox.dropped", notice)
        return True

    # -- gaps ------------------------------------------------------------------

    def pending_gaps(self) -> list[tuple[int, int]]:
        """Inclusive seq ranges lost with a database and not yet declared."""
        with self._store.read() as conn:
            return [
                (int(a), int(b))
                for a, b in conn.execute(
                    "SELECT first, last FROM outbox_gaps WHERE declared_at IS NULL ORDER BY first"
                )
            ]

    def declare_due_gaps(self, *, force: bool = False) -> int:
        """Announce pending gaps older than ``gap_grace_s`` (all with ``force``) in
        ``outbox.dropped``, minus the seqs salvaged into the outbox; how many seqs."""
        now = self._clock()
        declared = 0
        with self._store.write() as conn:
            rows = conn.execute(
                "SELECT id, first, last, reason FROM outbox_gaps"
                " WHERE declared_at IS NULL AND (? OR noticed_at <= ?) ORDER BY first",
                (int(force), now - self._gap_grace_s),
            ).fetchall()
            for gap_id, first, last, reason in rows:
                present = [
                    int(r[0])
                    for r in conn.execute(
                        "SELECT seq FROM outbox WHERE seq BETWEEN ? AND ? ORDER BY seq",
                        (first, last),
                    )
                ]
                missing = _complement(int(first), int(last), present)
                for start in range(0, len(missing), _RANGES_PER_NOTICE):
                    chunk = missing[start : start + _RANGES_PER_NOTICE]
                    count = sum(b - a + 1 for a, b in chunk)
                    declared += count
                    self.enqueue_in(
                        conn,
                        "outbox.dropped",
                        {
                            "at": format_time(utc_now()),
                            "seqs": chunk,
                            "count": count,
                            "types": {},
                            "reason": str(reason),
                        },
                    )
                conn.execute("UPDATE outbox_gaps SET declared_at = ? WHERE id = ?", (now, gap_id))
        if rows:
            log.warning(
                "seq ranges declared lost to the platform",
                extra={"gaps": len(rows), "seqs": declared, "salvage_window_passed": not force},
            )
            self.notify()
        return declared

    def insert_salvaged(self, rows: Iterable[SalvagedRow], acked_through: int = 0) -> int:
        """Put records of a lost database back, with their original seq and sealed text.

        Only seqs inside a pending gap and not already here are taken (a record is
        never sent twice, and never after its range was declared lost); how many.
        ``acked_through`` is the lost database's: the platform has every seq up to
        it, so pending gaps start above it.
        """
        taken = 0
        with self._store.write() as conn:
            conn.execute(
                "UPDATE outbox_gaps SET first = ? WHERE declared_at IS NULL AND first <= ?"
                " AND last > ?",
                (acked_through + 1, acked_through, acked_through),
            )
            gaps = conn.execute(
                "SELECT first, last FROM outbox_gaps WHERE declared_at IS NULL"
            ).fetchall()
            for row in rows:
                if not any(a <= row.seq <= b for a, b in gaps):
                    continue
                if conn.execute("SELECT 1 FROM outbox WHERE seq = ?", (row.seq,)).fetchone():
                    continue
                kind = topic_kind(row.type)
                size = len(row.sealed) + _ROW_OVERHEAD
                conn.execute(
                    "INSERT INTO outbox (seq, kind, type, priority, sealed, size, created_at,"
                    " droppable) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row.seq,
                        kind,
                        row.type,
                        PRIORITY[kind],
                        row.sealed,
                        size,
                        row.created_at,
                        int(row.type in self._droppable),
                    ),
                )
                conn.execute("UPDATE outbox_meta SET bytes = bytes + ?", (size,))
                taken += 1
        if taken:
            self.notify()
        return taken

    def ack_through(self, through_seq: int) -> int:
        """Release every message with seq ≤ ``through_seq``; returns how many left the outbox.

        Raises ValueError when ``through_seq`` is beyond the last seq ever assigned.
        """
        with self._store.write() as conn:
            last_seq, total, acked = conn.execute(
                "SELECT last_seq, bytes, acked_through FROM outbox_meta"
            ).fetchone()
            if through_seq > last_seq:
                raise ValueError(
                    f"sync.ack through_seq {through_seq} is beyond the last seq {last_seq}"
                )
            if through_seq <= acked:
                return 0
            count, freed = conn.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM outbox WHERE seq <= ?",
                (through_seq,),
            ).fetchone()
            conn.execute("DELETE FROM outbox WHERE seq <= ?", (through_seq,))
            total -= freed
            rearm = ", near_full = 0" if total < self._warn_bytes * _REARM else ""
            conn.execute(
                f"UPDATE outbox_meta SET bytes = ?, acked_through = ?{rearm}",
                (total, through_seq),
            )
        with self._lock:
            self._acked_through = max(self._acked_through, through_seq)
        return int(count)

    # -- reading ---------------------------------------------------------------

    def next_batch(self, after: dict[int, int], limit: int) -> list[OutboxItem]:
        """Up to ``limit`` messages in publish order: by priority, then seq, past ``after``.

        ``after`` maps priority → the last seq already published at that priority.
        """
        items: list[OutboxItem] = []
        with self._store.read() as conn:
            for priority in sorted(PRIORITY.values()):
                if len(items) >= limit:
                    break
                rows = conn.execute(
                    "SELECT seq, kind, type, priority, sealed FROM outbox"
                    " WHERE priority = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (priority, after.get(priority, 0), limit - len(items)),
                ).fetchall()
                items += [OutboxItem(*row) for row in rows]
        return items

    @property
    def acked_through(self) -> int:
        """The newest ``through_seq`` the platform acknowledged."""
        with self._lock:
            return self._acked_through

    def stats(self) -> OutboxStats:
        """Depth, bytes and progress."""
        with self._store.read() as conn:
            last_seq, total, acked = conn.execute(
                "SELECT last_seq, bytes, acked_through FROM outbox_meta"
            ).fetchone()
            depth = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
            # Rows are created in seq order: the lowest seq is the oldest (primary-key lookup,
            # where min(created_at) would scan every row).
            first = conn.execute("SELECT created_at FROM outbox ORDER BY seq LIMIT 1").fetchone()
            oldest = None if first is None else first[0]
        age = None if oldest is None else max(0.0, self._clock() - float(oldest))
        return OutboxStats(int(depth), int(total), int(last_seq), int(acked), age)

    # -- notification --------------------------------------------------------

    def add_record_observer(
        self, observer: Callable[[int | None, str, dict[str, Any]], None]
    ) -> None:
        """Call ``observer(seq, type, body)`` for every message once its transaction commits.

        The body is the plain one, before sealing: observers keep only what is not personal
        (see :mod:`agent.sync.journal`). They run on the committing thread and must not raise.
        """
        self._record_observers.append(observer)

    def _observe(self, seq: int | None, msg_type: str, body: dict[str, Any]) -> None:
        for observer in self._record_observers:
            try:
                observer(seq, msg_type, body)
            except Exception:
                log.exception("record observer failed", extra={"type": msg_type})

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (quickly, from the enqueuing thread) after each enqueue."""
        self._listeners.append(callback)

    def notify(self) -> None:
        """Tell listeners that new messages are committed."""
        for callback in list(self._listeners):
            callback()


def _ranges(seqs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for seq in seqs:
        if out and out[-1][1] == seq - 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


def _complement(first: int, last: int, present: list[int]) -> list[list[int]]:
    """Inclusive ranges of [first, last] not in the sorted ``present``."""
    out: list[list[int]] = []
    cursor = first
    for seq in present:
        if seq > cursor:
            out.append([cursor, seq - 1])
        cursor = max(cursor, seq + 1)
    if cursor <= last:
        out.append([cursor, last])
    return out

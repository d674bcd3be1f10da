"""Trusted time: a high-water mark that a clock set back can never lower.

Grants are judged against :meth:`ClockGuard.now`, the later of the system clock
and the highest time the gateway has trusted before (its own clock readings and
the ``ts`` of verified platform commands), so setting the clock back never
extends a grant. The mark is persisted in the store's ``meta`` table, so it
survives restarts. ``last_contact`` is when the platform was last heard from
(a verified command), for the offline-grace limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.store import Store

log = logging.getLogger(__name__)

_MARK_KEY = "clock_high_water"
_CONTACT_KEY = "platform_last_contact"
# Persist the mark at most this often from clock readings alone (each write fsyncs).
_PERSIST_EVERY_S = 30.0
# A system clock this far behind the mark is reported (NTP steps are smaller).
BACKWARD_ALERT_S = 120.0


@dataclass(frozen=True)
class ClockState:
    """What ``lockgw status`` shows about time."""

    system: float
    trusted: float
    behind_s: float
    last_contact: float | None


class ClockGuard:
    """The gateway's trusted notion of now (seconds since the epoch, UTC)."""

    def __init__(self, store: Store, system_clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = system_clock
        self._lock = threading.Lock()
        self._mark = float(self._read(_MARK_KEY) or 0.0)
        contact = self._read(_CONTACT_KEY)
        self._last_contact = float(contact) if contact is not None else None
        self._persisted = self._mark
        self._warned_backwards = False

    def now(self) -> float:
        """The later of the system clock and the high-water mark; advances the mark."""
        system = self._clock()
        persist = warn = False
        with self._lock:
            if system >= self._mark:
                self._mark = system
                self._warned_backwards = False
                persist = system - self._persisted >= _PERSIST_EVERY_S
            elif self._mark - system > BACKWARD_ALERT_S and not self._warned_backwards:
                self._warned_backwards = warn = True
            mark = self._mark
        # Store writes happen outside our lock: callers may hold the store's lock.
        if persist:
            self.flush()
        if warn:
            log.error(
                "system clock is behind trusted time; using trusted time",
                extra={"behind_s": round(mark - system, 1)},
            )
            self._store.record_incident(
                "clock_backwards", f"system clock {mark - system:.0f} s behind"
            )
        return mark

    def observe_trusted(self, ts: float) -> None:
        """A verified platform message carried ``ts``: raise the mark, note the contact."""
        with self._lock:
            self._mark = max(self._mark, ts)
            self._last_contact = max(self._last_contact or 0.0, self._clock(), ts)
        self.flush()

    def last_contact(self) -> float | None:
        """When the platform was last heard from (trusted time), or None if never."""
        with self._lock:
            return self._last_contact

    def state(self) -> ClockState:
        """A snapshot for status displays."""
        trusted = self.now()
        system = self._clock()
        return ClockState(system, trusted, max(0.0, trusted - system), self.last_contact())

    def flush(self) -> None:
        """Persist the mark and the last contact now."""
        with self._lock:
            mark, contact = self._mark, self._last_contact
        with self._store.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_MARK_KEY, repr(mark))
            )
            if contact is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (_CONTACT_KEY, repr(contact)),
                )
        with self._lock:
            self._persisted = max(self._persisted, mark)

    def _read(self, key: str) -> str | None:
        with self._store.read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

"""Trusted time: a high-water mark that a clock set back can never lower.

Grants are judged against :meth:`ClockGuard.now`, the later of the system clock
and the highest time the gateway has trusted before (its own clock readings and
the ``ts`` of verified platform commands), so setting the clock back never
extends a grant. The mark is persisted in the store's ``meta`` table, so it
survives restarts. ``last_contact`` is when the platform was last heard from
(a verified command), for the offline-grace limit.

A system clock running far ahead (a dead RTC battery, a bad NTP server) must
not push the mark into the future for good, which would expire every grant
with no way back: with ``max_ahead_s`` set (the offline grace), readings of the
system clock count at most that far past the newest platform ``ts``. Beyond it
the doors refuse as "offline too long" until the platform is heard from, and
an incident is recorded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.state.store import Store

log = logging.getLogger(__name__)

_MARK_KEY = "clock_high_water"
_CONTACT_KEY = "platform_last_contact"
_PLATFORM_TS_KEY = "platform_last_ts"
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
    ahead_s: float
    last_contact: float | None


class ClockGuard:
    """The gateway's trusted notion of now (seconds since the epoch, UTC)."""

    def __init__(
        self,
        store: Store,
        system_clock: Callable[[], float] = time.time,
        max_ahead_s: float | None = None,
    ) -> None:
        self._store = store
        self._clock = system_clock
        self._max_ahead = max_ahead_s
        self._lock = threading.Lock()
        self._mark = float(self._read(_MARK_KEY) or 0.0)
        contact = self._read(_CONTACT_KEY)
        self._last_contact = float(contact) if contact is not None else None
        platform_ts = self._read(_PLATFORM_TS_KEY)
        self._platform_ts = float(platform_ts) if platform_ts is not None else None
        self._persisted = self._mark
        self._warned_backwards = False
        self._warned_ahead = False

    def _reading(self) -> tuple[float, float]:
        """(system clock, the reading that may count: capped past the platform's time)."""
        system = self._clock()
        if self._max_ahead is None or self._platform_ts is None:
            return system, system
        return system, min(system, self._platform_ts + self._max_ahead)

    def now(self) -> float:
        """The later of the system clock and the high-water mark; advances the mark."""
        persist = warn = ahead = False
        with self._lock:
            system, reading = self._reading()
            if reading >= self._mark:
                self._mark = reading
                self._warned_backwards = False
                persist = reading - self._persisted >= _PERSIST_EVERY_S
            elif self._mark - system > BACKWARD_ALERT_S and not self._warned_backwards:
                self._warned_backwards = warn = True
            if reading < system and not self._warned_ahead:
                self._warned_ahead = ahead = True
            elif reading == system:
                self._warned_ahead = False
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
        if ahead:
            log.error(
                "system clock is far ahead of the platform's time; not trusted past the grace",
                extra={"ahead_s": round(system - (self._platform_ts or 0.0), 1)},
            )
            self._store.record_incident(
                "clock_ahead",
                f"system clock {system - (self._platform_ts or 0.0):.0f} s past the platform's",
            )
        return mark

    def observe_trusted(self, ts: float) -> None:
        """A verified platform message carried ``ts``: raise the mark, note the contact."""
        with self._lock:
            self._platform_ts = max(self._platform_ts or 0.0, ts)
            _system, reading = self._reading()
            self._mark = max(self._mark, ts)
            self._last_contact = max(self._last_contact or 0.0, reading, ts)
        self.flush()

    def last_contact(self) -> float | None:
        """When the platform was last heard from (trusted time), or None if never."""
        with self._lock:
            return self._last_contact

    def state(self) -> ClockState:
        """A snapshot for status displays."""
        trusted = self.now()
        system = self._clock()
        return ClockState(
            system,
            trusted,
            max(0.0, trusted - system),
            max(0.0, system - trusted),
            self.last_contact(),
        )

    def flush(self) -> None:
        """Persist the mark and the last contact now."""
        with self._lock:
            mark, contact, platform_ts = self._mark, self._last_contact, self._platform_ts
        with self._store.write() as conn:
            if platform_ts is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (_PLATFORM_TS_KEY, repr(platform_ts)),
                )
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

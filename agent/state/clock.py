"""Trusted time: runs on the monotonic clock; the wall clock and the platform only correct it.

Between persisted anchors trusted time advances with ``CLOCK_BOOTTIME`` (which
counts suspend and is never stepped), so neither direction of a wall-clock
change can push it:

- a wall clock that moves back does not stop time: trusted time keeps running
  from its anchor at the monotonic rate;
- a wall clock ahead is believed only up to a small drift (``drift_s`` plus
  ``SLEW_PPM`` of the time since) past the platform's last ``ts`` carried
  forward on the monotonic clock, so it cannot move a grant's start closer,
  and when the clock is fixed nothing is left ahead to recover from;
- a platform ``ts`` ahead of trusted time by at most ``max_skew_s`` moves it
  forward; further ahead it is refused (``clock_skew``) and does not move
  time, unless the wall clock says the same thing (the platform confirms it:
  then trusted time catches up, which is how a gateway that was behind
  recovers).

Trusted time never goes back: every reading is at least the previous one.

A power cycle breaks monotonic continuity (the kernel's boot id changes and
``CLOCK_BOOTTIME`` restarts). Trusted time then resumes from the persisted
anchor, never below it, and believes the wall clock forward up to
``max_ahead_s`` (the offline grace) past the platform's last ``ts``, since
nothing else can say how long the power was off. That is the one moment the
wall clock counts beyond the drift; after it, the point where time resumed is
held like a platform ``ts`` until the platform's next one (state
``restarted``). The anchor is persisted every
``_PERSIST_EVERY_S`` of trusted time and at shutdown.

``last_contact`` is when (in trusted time) the platform was last heard from,
for the offline-grace limit. The clock sources are injectable for tests.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from agent.state.reserve import is_disk_full

if TYPE_CHECKING:
    from agent.state.store import Store

log = logging.getLogger(__name__)

_MARK_KEY = "clock_high_water"
_ANCHOR_KEY = "clock_anchor"
_CONTACT_KEY = "platform_last_contact"
_PLATFORM_TS_KEY = "platform_last_ts"
_PLATFORM_POINT_KEY = "platform_point"
_RESUME_KEY = "clock_resume_point"
# Persist the anchor at most this often from readings alone (each write fsyncs).
_PERSIST_EVERY_S = 30.0
# A wall clock this far behind trusted time is reported (NTP steps are smaller).
BACKWARD_ALERT_S = 120.0
# How much faster than the monotonic clock the wall clock may legitimately run
# (crystal drift of the monotonic clock, NTP slew): 200 ppm is 17 s a day.
SLEW_PPM = 200.0
DEFAULT_DRIFT_S = 30.0
DEFAULT_MAX_SKEW_S = 300.0
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

ClockMode = Literal["never_synced", "ok", "restarted", "wall_behind", "wall_ahead"]


class ClockSources(Protocol):
    """Where the clock readings come from (the system's, or a test's)."""

    def wall(self) -> float:
        """The wall clock, seconds since the epoch (can be set to anything)."""
        ...

    def boot(self) -> float:
        """A monotonic clock that counts suspend (``CLOCK_BOOTTIME``), seconds."""
        ...

    def boot_id(self) -> str:
        """Changes at every boot: monotonic readings compare only within one boot."""
        ...


class SystemClocks:
    """The real clocks of this machine."""

    def wall(self) -> float:
        """``time.time()``."""
        return time.time()

    def boot(self) -> float:
        """``CLOCK_BOOTTIME`` where the platform has it, else ``CLOCK_MONOTONIC``."""
        return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))

    def boot_id(self) -> str:
        """The kernel's boot id (empty where there is none)."""
        try:
            return _BOOT_ID.read_text(encoding="ascii").strip()
        except OSError:
            return ""


class WallOnly:
    """Sources from one wall-clock callable with an ideal monotonic clock beside it.

    For tests written against a single settable clock: the monotonic reading
    advances only when the wall clock advances, as if nobody set it.
    """

    def __init__(self, wall: Callable[[], float]) -> None:
        self._wall = wall
        self._last = wall()
        self._boot = 0.0

    def wall(self) -> float:
        """The callable's reading."""
        return self._wall()

    def boot(self) -> float:
        """Advances with forward moves of the wall clock only."""
        now = self._wall()
        self._boot += max(0.0, now - self._last)
        self._last = now
        return self._boot

    def boot_id(self) -> str:
        """One boot for the object's life."""
        return f"wall-only-{id(self)}"


@dataclass(frozen=True)
class ClockState:
    """What ``lockgw status`` and ``doctor`` show about time."""

    system: float
    trusted: float
    behind_s: float
    ahead_s: float
    last_contact: float | None
    mode: ClockMode
    uptime_s: float
    platform_ts: float | None


@dataclass(frozen=True)
class _Point:
    """A trusted time ``t`` observed at monotonic reading ``b`` during boot ``boot_id``."""

    t: float
    b: float
    boot_id: str

    def at(self, b: float, boot_id: str) -> float | None:
        """``t`` carried forward on the monotonic clock; None across a reboot."""
        if boot_id != self.boot_id or b < self.b:
            return None
        return self.t + (b - self.b)

    def dump(self) -> str:
        return json.dumps({"t": self.t, "b": self.b, "boot_id": self.boot_id})

    @classmethod
    def load(cls, text: str | None) -> _Point | None:
        if text is None:
            return None
        try:
            raw = json.loads(text)
            point = cls(float(raw["t"]), float(raw["b"]), str(raw["boot_id"]))
        except (ValueError, KeyError, TypeError):
            return None
        return point if math.isfinite(point.t) and math.isfinite(point.b) else None


class ClockGuard:
    """The gateway's trusted notion of now (seconds since the epoch, UTC)."""

    def __init__(
        self,
        store: Store,
        system_clock: Callable[[], float] | None = None,
        max_ahead_s: float | None = None,
        *,
        sources: ClockSources | None = None,
        drift_s: float = DEFAULT_DRIFT_S,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
    ) -> None:
        """``sources`` defaults to :class:`SystemClocks`; ``system_clock`` alone (tests)
        gives :class:`WallOnly` sources. ``max_ahead_s`` bounds how far past the
        platform's last ``ts`` the wall clock is believed after a power cycle."""
        if sources is None:
            sources = WallOnly(system_clock) if system_clock is not None else SystemClocks()
        self._src = sources
        self._store = store
        self._max_ahead = max_ahead_s
        self._drift = drift_s
        self._max_skew = max_skew_s
        self._lock = threading.Lock()
        self._boot_id = sources.boot_id()
        self._started_b = sources.boot()
        self._last_b = self._started_b
        contact = self._read(_CONTACT_KEY)
        self._last_contact = float(contact) if contact is not None else None
        platform_ts = self._read(_PLATFORM_TS_KEY)
        self._platform_ts = float(platform_ts) if platform_ts is not None else None
        self._platform = _Point.load(self._read(_PLATFORM_POINT_KEY))
        mark = float(self._read(_MARK_KEY) or 0.0)
        anchor = _Point.load(self._read(_ANCHOR_KEY))
        b = self._started_b
        resumed = anchor.at(b, self._boot_id) if anchor is not None else None
        if resumed is not None:
            start = max(mark, resumed)
        else:
            # No monotonic continuity: the anchor, and the wall clock forward from it
            # as far as the platform's last ts plus the offline grace allows.
            start = max(mark, min(sources.wall(), self._reboot_ceiling()))
        self._anchor = _Point(start, b, self._boot_id)
        # After a power cycle the wall clock was believed once, just now; from here on it is
        # held to the drift past this point, as past a platform ts, until the platform speaks.
        saved_resume = _Point.load(self._read(_RESUME_KEY))
        if resumed is None and mark > 0.0:
            self._resume: _Point | None = self._anchor
        elif saved_resume is not None and saved_resume.at(b, self._boot_id) is not None:
            self._resume = saved_resume  # restarted within the boot that resumed
        else:
            self._resume = None
        heard = self._platform is not None and self._platform.at(b, self._boot_id) is not None
        self._restarted = self._resume is not None and not heard
        self._last = start
        self._persisted = start if resumed is not None else -math.inf
        self._warned_backwards = False
        self._warned_ahead = False
        self._incidents: list[tuple[str, str]] = []
        self.counters: dict[str, int] = {
            "skew_rejected": 0,
            "confirmed_by_platform": 0,
            "persist_failed_disk_full": 0,
        }

    # -- reading ---------------------------------------------------------------------

    def _reboot_ceiling(self) -> float:
        if self._max_ahead is None or self._platform_ts is None:
            return math.inf
        return self._platform_ts + self._max_ahead

    def _ceiling(self, b: float) -> float:
        """How far the wall clock is believed: the platform's time carried forward plus drift."""
        reference = self._reference(b)
        if reference is not None:
            carried = reference.at(b, self._boot_id)
            assert carried is not None
            return carried + self._drift + (b - reference.b) * SLEW_PPM * 1e-6
        return self._reboot_ceiling()

    def _reference(self, b: float) -> _Point | None:
        """The point the wall clock is judged from: the platform's last ts in this boot,
        else where trusted time resumed after a power cycle."""
        for point in (self._platform, self._resume):
            if point is not None and point.at(b, self._boot_id) is not None:
                return point
        return None

    def _rebased(self, point: _Point, b: float) -> _Point:
        carried = point.at(self._last_b, self._boot_id)
        return _Point(point.t if carried is None else carried, b, self._boot_id)

    def _compute(self) -> tuple[float, float, float]:
        """(trusted, wall, monotonic) now; advances the floor. Call with the lock held."""
        wall, b = self._src.wall(), self._src.boot()
        if b < self._last_b:
            # The monotonic clock went back within one boot (it must not; a broken or
            # hostile kernel): no time passed, both points carry on from here.
            self._anchor = self._rebased(self._anchor, b)
            if self._platform is not None and self._platform.boot_id == self._boot_id:
                self._platform = self._rebased(self._platform, b)
            if self._resume is not None:
                self._resume = self._rebased(self._resume, b)
        self._last_b = b
        base = self._anchor.at(b, self._boot_id)
        if base is None:
            self._anchor = _Point(self._last, b, self._boot_id)
            base = self._last
        # Neither the monotonic estimate nor the wall clock may run past the ceiling (the
        # platform's time carried forward, plus drift): an excess pauses, never grows.
        # (After a power cycle the ceiling is a constant, so it bounds the wall clock only.)
        ceiling = self._ceiling(b)
        trusted = max(
            self._last,
            min(base, ceiling) if self._reference(b) is not None else base,
            min(wall, ceiling),
        )
        self._last = trusted
        return trusted, wall, b

    def now(self) -> float:
        """Trusted time; never less than any earlier reading."""
        persist = warn_back = warn_ahead = False
        with self._lock:
            trusted, wall, _b = self._compute()
            persist = trusted - self._persisted >= _PERSIST_EVERY_S
            behind = trusted - wall
            if behind > BACKWARD_ALERT_S:
                warn_back, self._warned_backwards = not self._warned_backwards, True
            elif behind <= 0:
                self._warned_backwards = False
            ahead = wall - trusted
            if ahead > self._drift + BACKWARD_ALERT_S:
                warn_ahead, self._warned_ahead = not self._warned_ahead, True
            elif ahead <= self._drift:
                self._warned_ahead = False
        # Store writes happen outside our lock: callers may hold the store's lock.
        if warn_back:
            log.error(
                "wall clock is behind trusted time; trusted time keeps running",
                extra={"behind_s": round(trusted - wall, 1)},
            )
            self._incidents.append(
                ("clock_backwards", f"system clock {trusted - wall:.0f} s behind trusted time")
            )
        if warn_ahead:
            log.error(
                "wall clock is ahead of trusted time; not believed until the platform confirms",
                extra={"ahead_s": round(wall - trusted, 1)},
            )
            self._incidents.append(
                ("clock_ahead", f"system clock {wall - trusted:.0f} s ahead of trusted time")
            )
        # A reading taken inside a write transaction (the outbox stamps envelopes there)
        # must not open another: persisting and incidents wait for the next reading.
        if (persist or self._incidents) and not self._store.in_transaction:
            try:
                if persist:
                    self.flush()
                while self._incidents:
                    self._store.record_incident(*self._incidents[0])
                    self._incidents.pop(0)
            except (sqlite3.Error, OSError) as exc:
                if not is_disk_full(exc):
                    raise
                # A full disk must not stop the clock that every door reads: time runs on
                # in memory and is persisted at the next reading once there is room.
                self.counters["persist_failed_disk_full"] += 1
        return trusted

    def observe_trusted(self, ts: float) -> bool:
        """A verified platform message carried ``ts``. Returns False (and changes
        nothing) when ``ts`` is further ahead of trusted time than the allowed skew
        and the wall clock does not agree with it; otherwise notes the contact and
        moves trusted time forward to ``ts`` if it is ahead."""
        if not math.isfinite(ts):
            return False
        with self._lock:
            trusted, wall, b = self._compute()
            if ts - trusted > self._max_skew:
                if abs(ts - wall) > self._max_skew:
                    self.counters["skew_rejected"] += 1
                    skewed = True
                else:
                    self.counters["confirmed_by_platform"] += 1
                    skewed = False
            else:
                skewed = False
            if not skewed:
                if ts > trusted:
                    self._anchor = _Point(ts, b, self._boot_id)
                    self._last = trusted = ts
                # The point where time resumed after a power cycle was the wall clock's word:
                # the platform's next ts replaces it, whatever it says. A ts within the drift
                # of the carried platform point renews that point (the slew allowance starts
                # again, and an excess over the drift pauses); an older one (a command that
                # waited at the broker) would hold time back and is only noted.
                reference = self._reference(b)
                carried = None if reference is None else reference.at(b, self._boot_id)
                if (
                    carried is None
                    or reference is not self._platform
                    or ts >= carried - self._drift
                ):
                    self._platform = _Point(ts, b, self._boot_id)
                    self._restarted = False
                self._platform_ts = max(self._platform_ts or 0.0, ts)
                self._last_contact = max(self._last_contact or 0.0, trusted)
        if skewed:
            log.warning(
                "platform ts too far ahead of trusted time; refused",
                extra={"ahead_s": round(ts - trusted, 1), "max_skew_s": self._max_skew},
            )
            return False
        self.flush()
        return True

    def last_contact(self) -> float | None:
        """When the platform was last heard from (trusted time), or None if never."""
        with self._lock:
            return self._last_contact

    def uptime(self) -> float:
        """Seconds since this guard started, on the monotonic clock."""
        return max(0.0, self._src.boot() - self._started_b)

    def state(self) -> ClockState:
        """A snapshot for status displays."""
        trusted = self.now()
        with self._lock:
            wall, b = self._src.wall(), self._src.boot()
            ceiling = self._ceiling(b)
            platform_ts, contact, restarted = (
                self._platform_ts,
                self._last_contact,
                self._restarted,
            )
        mode: ClockMode
        if contact is None:
            mode = "never_synced"
        elif trusted - wall > BACKWARD_ALERT_S:
            mode = "wall_behind"
        elif wall > ceiling:
            mode = "wall_ahead"
        elif restarted:
            mode = "restarted"
        else:
            mode = "ok"
        return ClockState(
            system=wall,
            trusted=trusted,
            behind_s=max(0.0, trusted - wall),
            ahead_s=max(0.0, wall - trusted),
            last_contact=contact,
            mode=mode,
            uptime_s=max(0.0, b - self._started_b),
            platform_ts=platform_ts,
        )

    def flush(self) -> None:
        """Persist the anchor, the platform's time and the last contact now."""
        with self._lock:
            trusted, _wall, b = self._compute()
            self._anchor = _Point(trusted, b, self._boot_id)
            rows = [(_MARK_KEY, repr(trusted)), (_ANCHOR_KEY, self._anchor.dump())]
            if self._platform_ts is not None:
                rows.append((_PLATFORM_TS_KEY, repr(self._platform_ts)))
            if self._platform is not None:
                rows.append((_PLATFORM_POINT_KEY, self._platform.dump()))
            if self._last_contact is not None:
                rows.append((_CONTACT_KEY, repr(self._last_contact)))
            if self._resume is not None:
                rows.append((_RESUME_KEY, self._resume.dump()))
        with self._store.write() as conn:
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows)
        with self._lock:
            self._persisted = max(self._persisted, trusted)

    def _read(self, key: str) -> str | None:
        with self._store.read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

"""Liveness of the daemon's own loops, for the systemd watchdog.

Each loop (the main loop, the link thread, each bus and reader thread) beats
regularly; the watchdog is pinged only while every registered loop has beaten
within its allowed gap, so a hung thread makes systemd restart the daemon.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Heartbeats:
    """Last beat per loop name, and the largest gap each loop is allowed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._allowed: dict[str, float] = {}

    def register(self, name: str, allowed_gap_s: float) -> None:
        """Start watching ``name``; it counts as having just beaten."""
        with self._lock:
            self._allowed[name] = allowed_gap_s
            self._last[name] = self._clock()

    def unregister(self, name: str) -> None:
        """Stop watching ``name`` (its loop ended on purpose)."""
        with self._lock:
            self._allowed.pop(name, None)
            self._last.pop(name, None)

    def beat(self, name: str) -> None:
        """``name`` is alive now."""
        with self._lock:
            if name in self._allowed:
                self._last[name] = self._clock()

    def stale(self) -> list[str]:
        """Names of loops that missed their allowed gap."""
        now = self._clock()
        with self._lock:
            return sorted(n for n, gap in self._allowed.items() if now - self._last[n] > gap)

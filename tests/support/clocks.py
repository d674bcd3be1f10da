"""The clock sources trusted time reads, set by the test: the wall clock anyone with root
sets, and a monotonic clock that only time (or a power cycle) moves."""

from __future__ import annotations

import time


class SettableClocks:
    """``wall_now`` is set freely; ``elapse`` moves both clocks; ``power_cycle`` restarts
    the monotonic clock under a new boot id."""

    def __init__(self, wall: float | None = None, boot: float = 1000.0) -> None:
        self.wall_now = time.time() if wall is None else wall
        self.boot_now = boot
        self.boot_name = "boot-1"

    def wall(self) -> float:
        return self.wall_now

    def boot(self) -> float:
        return self.boot_now

    def boot_id(self) -> str:
        return self.boot_name

    def elapse(self, seconds: float) -> None:
        """Real time passes: both clocks move."""
        self.wall_now += seconds
        self.boot_now += seconds

    def power_cycle(self, off_s: float) -> None:
        """Off for ``off_s``: the wall clock moved on, the monotonic one restarted."""
        self.wall_now += off_s
        self.boot_now = 5.0
        self.boot_name = f"{self.boot_name}+"

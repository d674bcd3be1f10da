"""Door state machine: door contact + the unlock window we commanded + time.

Pure: no clock, no I/O; every input carries ``now`` (monotonic seconds).

- ``closed``: the contact reports closed.
- ``open``: opened while an unlock we commanded was in force (or the first
  report after (re)connecting says open: we cannot know how it got there).
- ``forced``: opened while the lock was not unlocked by us.
- ``held_open``: an ``open`` door still open ``held_open_after_s`` later.
  A forced door stays ``forced`` until it closes.
"""

from __future__ import annotations

from .events import DoorState


class DoorStateMachine:
    """Derives the door state of one lock. Methods return the new state on a change."""

    def __init__(self, held_open_after_s: float) -> None:
        if held_open_after_s <= 0:
            raise ValueError(f"held_open_after_s must be positive, got {held_open_after_s}")
        self.held_open_after_s = held_open_after_s
        self.state = DoorState.UNKNOWN
        self._unlocked_until: float | None = None
        self._open_since: float | None = None
        self._baseline = True

    def unlocked(self, now: float, seconds: float) -> None:
        """We commanded an unlock for ``seconds`` starting ``now``."""
        until = now + seconds
        if self._unlocked_until is None or until > self._unlocked_until:
            self._unlocked_until = until

    def relocked(self) -> None:
        """We commanded the lock shut (or the unlock was not delivered)."""
        self._unlocked_until = None

    def is_unlocked(self, now: float) -> bool:
        """True while an unlock we commanded is in force."""
        return self._unlocked_until is not None and now < self._unlocked_until

    def contact(self, now: float, is_open: bool) -> DoorState | None:
        """The contact input reported ``is_open``; returns the new state if it changed."""
        baseline, self._baseline = self._baseline, False
        if not is_open:
            self._open_since = None
            return self._go(DoorState.CLOSED)
        if self.state in (DoorState.OPEN, DoorState.FORCED, DoorState.HELD_OPEN):
            if self._open_since is None:
                self._open_since = now
            return None  # repeated report of an open door
        self._open_since = now
        if baseline or self.is_unlocked(now):
            return self._go(DoorState.OPEN)
        return self._go(DoorState.FORCED)

    def tick(self, now: float) -> DoorState | None:
        """Advance time; returns ``held_open`` when an open door passes its limit."""
        if self._unlocked_until is not None and now >= self._unlocked_until:
            self._unlocked_until = None
        if (
            self.state is DoorState.OPEN
            and self._open_since is not None
            and now - self._open_since >= self.held_open_after_s
        ):
            return self._go(DoorState.HELD_OPEN)
        return None

    def reset(self) -> None:
        """The lock went offline: its next contact report is a baseline, not an event
        we can judge (an opening while we could not see it is not called forced)."""
        self._baseline = True

    def baseline_missing(self) -> DoorState | None:
        """No contact report came after (re)connecting: a lock that reports only
        changes had a closed door; returns ``closed`` if that is news."""
        if not self._baseline:
            return None
        self._baseline = False
        if self.state is DoorState.UNKNOWN:
            return self._go(DoorState.CLOSED)
        return None

    def _go(self, state: DoorState) -> DoorState | None:
        if state is self.state:
            return None
        self.state = state
        return state

"""The doors as the flow sees them: each door's parts, the flow's tunables, what a visit came to."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from agent.door.decision import SitePolicy
from drivers.camera.sources import FrameSource

# A record to commit: (message type, body).
Record = tuple[str, dict[str, Any]]


class LockPort(Protocol):
    """What the flow needs of a lock bus: unlock and feedback by address."""

    def unlock(self, address: int, seconds: float) -> None:
        """Energise the lock's relay for ``seconds``."""

    def feedback(self, address: int, granted: bool) -> None:
        """LED and buzzer: granted or denied."""


@dataclass
class DoorDevices:
    """One door's parts."""

    lock_id: str
    room: str
    bus_name: str
    address: int
    unlock_seconds: float
    bus: LockPort | None
    camera: FrameSource | None


@dataclass(frozen=True)
class FlowSettings:
    """Tunables of the flow (from the configuration)."""

    policy: SitePolicy
    face_attempts: int = 3
    """Frames of one attempt: any matching frame admits; PAD is fused over all of them."""
    face_timeout_s: float = 2.0
    liveness_frames: int = 12
    """Frames of the blink burst (liveness with blink)."""
    pin_max_len: int = 12
    pin_entry_timeout_s: float = 10.0


@dataclass(frozen=True)
class VisitOutcome:
    """What one presentation at a door came to (for tests, the CLI and metrics)."""

    lock: str
    granted: bool
    reason: str
    say: str
    seqs: tuple[int | None, ...]
    elapsed_ms: float


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - started) * 1000

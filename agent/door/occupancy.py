"""Occupant counting: faces passing while a door is unlocked, against the guests verified."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.door.alerts import AlertRules
from agent.door.doors import DoorDevices, Record
from agent.door.records import iso
from agent.face import FaceWorker, watch_entry

# How often a frame is taken while the door is open.
OCCUPANT_FRAME_PERIOD_S = 0.5


@dataclass
class _Window:
    verified: int = 0
    grant: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class OccupantWatch:
    """Counts faces during each unlock window and raises ``alert.unregistered_occupant``."""

    def __init__(
        self,
        face: FaceWorker | None,
        rules: AlertRules,
        now: Callable[[], float],
        commit: Callable[[list[Record]], object],
        face_timeout_s: float,
    ) -> None:
        self._face = face
        self._rules = rules
        self._now = now
        self._commit = commit
        self._timeout = face_timeout_s
        self._windows: dict[str, _Window] = {}

    def opened(self, door: DoorDevices, seconds: float, grant_id: str | None) -> None:
        """A verified guest was let in: count them, and watch the window (on the loop)."""
        window = self._windows.setdefault(door.lock_id, _Window())
        window.verified += 1
        window.grant = grant_id
        if self._face is None or door.camera is None:
            window.verified, window.grant = 0, None
            return
        if window.task is None or window.task.done():
            window.task = asyncio.create_task(self._watch(door, seconds, window))

    async def _watch(self, door: DoorDevices, seconds: float, window: _Window) -> None:
        face, camera = self._face, door.camera
        assert face is not None and camera is not None
        timeout = self._timeout
        try:
            count = await asyncio.to_thread(
                lambda: watch_entry(
                    camera.read,
                    lambda frame: face.encodings(frame, timeout),
                    verified=window.verified,
                    duration_s=seconds,
                    frame_interval_s=OCCUPANT_FRAME_PERIOD_S,
                    same_person=face.settings.same_person,
                )
            )
            alerts = self._rules.on_occupants(
                door.lock_id, iso(self._now()), count.faces, window.verified, window.grant
            )
            if alerts:
                await asyncio.to_thread(self._commit, list(alerts))
        finally:
            window.verified, window.grant = 0, None

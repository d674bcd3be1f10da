"""Occupant counting: how many distinct people passed while a door was open.

Every face seen in the frames taken while a door is unlocked for an entry is
encoded; encodings are clustered by distance (two faces in the same frame are
always two people). More clusters than verified guests raises
``alert.unregistered_occupant`` (实数登记: every person must register).

The count is a lower bound: the detector (YuNet by default; dlib's HOG finds
fewer) misses faces turned away or cut by the frame edge, so a missed face can
hide a person but a false alarm needs two clearly different faces.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agent.face.settings import SAME_PERSON
from agent.face.template import distance

log = logging.getLogger(__name__)

DEFAULT_SAME_PERSON = SAME_PERSON["mobilefacenet"]
"""Faces closer than this across frames are taken as the same person (the default model's
unit vectors; dlib's descriptors need ``SAME_PERSON["dlib"]``, FaceSettings.same_person)."""


@dataclass(frozen=True)
class OccupantCount:
    """Result of one entry's counting."""

    faces: int
    verified: int
    frames: int
    max_in_one_frame: int

    @property
    def unregistered(self) -> int:
        """Faces beyond the guests verified (the rule in agent.door.alerts raises the alert)."""
        return max(0, self.faces - self.verified)


class OccupantCounter:
    """Clusters face encodings seen over the frames of one entry (not thread-safe)."""

    def __init__(self, same_person: float = DEFAULT_SAME_PERSON) -> None:
        if not 0 < same_person < 2:
            raise ValueError(f"same_person distance must be in (0, 2), got {same_person}")
        self._same = same_person
        self._clusters: list[list[np.ndarray]] = []
        self._frames = 0
        self._max_in_frame = 0

    @property
    def count(self) -> int:
        return len(self._clusters)

    def add_frame(self, encodings: Sequence[np.ndarray]) -> None:
        """Add the encodings of all faces in one frame."""
        self._frames += 1
        self._max_in_frame = max(self._max_in_frame, len(encodings))
        used: set[int] = set()
        for enc in encodings:
            best, best_d = -1, self._same
            for idx, members in enumerate(self._clusters):
                if idx in used:
                    continue
                d = min(distance(enc, m) for m in members)
                if d < best_d:
                    best, best_d = idx, d
            if best < 0:
                self._clusters.append([enc])
                used.add(len(self._clusters) - 1)
            else:
                self._clusters[best].append(enc)
                used.add(best)

    def result(self, verified: int) -> OccupantCount:
        return OccupantCount(self.count, verified, self._frames, self._max_in_frame)


def watch_entry(
    read_frame: Callable[[], np.ndarray | None],
    encodings: Callable[[np.ndarray], Sequence[np.ndarray] | None],
    *,
    verified: int,
    duration_s: float,
    frame_interval_s: float = 0.5,
    stop: threading.Event | None = None,
    same_person: float = DEFAULT_SAME_PERSON,
) -> OccupantCount:
    """Count faces for ``duration_s`` (or until ``stop``) while a door is open.

    ``read_frame`` is a frame source's read; ``encodings`` returns the faces'
    encodings of a frame, or None when that frame could not be processed (for
    instance the worker timed out), which is skipped.
    """
    stop = stop or threading.Event()
    counter = OccupantCounter(same_person)
    deadline = time.monotonic() + duration_s
    while not stop.is_set() and time.monotonic() < deadline:
        started = time.monotonic()
        frame = read_frame()
        if frame is not None:
            encs = encodings(frame)
            if encs is not None:
                counter.add_frame(encs)
        stop.wait(max(0.0, frame_interval_s - (time.monotonic() - started)))
    result = counter.result(verified)
    if result.unregistered:
        log.warning(
            "more faces than verified guests",
            extra={"faces": result.faces, "verified": result.verified},
        )
    return result

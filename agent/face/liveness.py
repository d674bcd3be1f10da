"""Liveness: is there a live person in front of the camera, not a photo?

The interface (:class:`LivenessDetector`) takes a short burst of frames and
returns a :class:`LivenessResult`; a site's policy chooses a detector or none.
:class:`BlinkDetector` looks for one blink: the eye aspect ratio (EAR,
Soukupová and Čech 2016) on the 68-point landmarks drops well below the most
open level seen and comes back within the burst. It stops a printed
photo held still; it does not stop a video replay or a mask (docs/face.md).

The 68-point model shipped with dlib was trained on iBUG 300-W, whose licence
excludes commercial use; a site must license a model for commercial use or
train its own (same file format) and configure it as ``landmarks68_model``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# 68-point indices of the eyes (the subject's right eye first), six points each:
# p1 outer/inner corner, p2 p3 upper lid, p4 other corner, p5 p6 lower lid.
_RIGHT_EYE = slice(36, 42)
_LEFT_EYE = slice(42, 48)


@dataclass(frozen=True)
class LivenessResult:
    """Outcome of a liveness check.

    ``reason``: "live" / "attack" (PAD), "blink" / "no_blink", "no_face", "off",
    or a worker failure ("timeout", "busy", ...). ``score`` is PAD's fused live
    probability (mean over the frames with a face).
    """

    passed: bool
    reason: str
    frames: int = 0
    faces: int = 0
    min_ear: float | None = None
    max_ear: float | None = None
    score: float | None = None
    threshold: float | None = None

    def as_record(self, mode: str) -> dict[str, object]:
        """The ``liveness`` member of ``checkin.verified``."""
        doc: dict[str, object] = {"mode": mode, "passed": self.passed, "detail": self.reason}
        if self.score is not None:
            doc["score"] = self.score
            doc["threshold"] = self.threshold
        return doc


def fuse_pad(
    scores: Sequence[float | None], threshold: float, frames: int | None = None
) -> LivenessResult:
    """PAD decision over the frames of one attempt: the mean live probability of the
    frames where a face was found must reach ``threshold``; no face: not live."""
    seen = [s for s in scores if s is not None]
    n = len(scores) if frames is None else frames
    if not seen:
        return LivenessResult(False, "no_face", n, 0, threshold=threshold)
    score = round(sum(seen) / len(seen), 4)
    passed = score >= threshold
    return LivenessResult(
        passed, "live" if passed else "attack", n, len(seen), score=score, threshold=threshold
    )


class LivenessDetector(Protocol):
    """A liveness check over a burst of BGR frames."""

    name: str

    def check(self, frames: Sequence[np.ndarray]) -> LivenessResult:
        """Decide on the burst; must not keep the frames."""
        ...


class LivenessOff:
    """Policy "off": every burst passes, and the record says liveness was not checked."""

    name = "off"

    def check(self, frames: Sequence[np.ndarray]) -> LivenessResult:
        return LivenessResult(True, "off", len(frames))


def eye_aspect_ratio(eye: np.ndarray) -> float:
    """EAR of six eye landmarks: (|p2-p6| + |p3-p5|) / (2 |p1-p4|)."""
    p = np.asarray(eye, dtype=np.float64)
    horizontal = np.linalg.norm(p[0] - p[3])
    if horizontal == 0:
        return 0.0
    vertical = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
    return float(vertical / (2.0 * horizontal))


def face_ear(landmarks: np.ndarray) -> float:
    """Mean EAR of both eyes from a 68 x 2 landmark array."""
    return (eye_aspect_ratio(landmarks[_RIGHT_EYE]) + eye_aspect_ratio(landmarks[_LEFT_EYE])) / 2


def has_blink(
    ears: Sequence[float | None], *, closed_ratio: float, reopen_ratio: float, min_open: float
) -> bool:
    """True when the series goes open -> closed -> open again (None: no face in that frame).

    Levels are relative to the most open EAR seen so far, because resting EAR
    differs from person to person (a smiling face can rest near 0.2).
    """
    open_level = 0.0
    closed = False
    for ear in ears:
        if ear is None:
            continue
        if not closed:
            open_level = max(open_level, ear)
            closed = open_level >= min_open and ear <= closed_ratio * open_level
        elif ear >= reopen_ratio * open_level:
            return True
    return False


class BlinkDetector:
    """Blink check on the 68-point landmarks of the largest face in each frame."""

    name = "blink"

    def __init__(
        self,
        landmarks: Callable[[np.ndarray], np.ndarray | None],
        *,
        closed_ratio: float = 0.7,
        reopen_ratio: float = 0.85,
        min_open_ear: float = 0.15,
    ) -> None:
        if not 0 < closed_ratio < reopen_ratio <= 1:
            raise ValueError("blink ratios need 0 < closed_ratio < reopen_ratio <= 1")
        self._landmarks = landmarks
        self.closed_ratio = closed_ratio
        self.reopen_ratio = reopen_ratio
        self.min_open_ear = min_open_ear

    def check(self, frames: Sequence[np.ndarray]) -> LivenessResult:
        ears: list[float | None] = []
        for frame in frames:
            pts = self._landmarks(frame)
            ears.append(None if pts is None else face_ear(pts))
        seen = [e for e in ears if e is not None]
        if not seen:
            return LivenessResult(False, "no_face", len(frames), 0)
        passed = has_blink(
            ears,
            closed_ratio=self.closed_ratio,
            reopen_ratio=self.reopen_ratio,
            min_open=self.min_open_ear,
        )
        return LivenessResult(
            passed,
            "blink" if passed else "no_blink",
            len(frames),
            len(seen),
            round(min(seen), 3),
            round(max(seen), 3),
        )

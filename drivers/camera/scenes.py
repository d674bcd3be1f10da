"""A camera whose view is a folder: what is in the folder now is what stands before the lens.

For simulation across processes: the simulated building puts a photo (a link to
it) into the folder when a person steps in front of a door's camera and empties
the folder when they leave. Each ``read()`` looks again, so changes show at
once. The photo is scaled and padded into a fixed frame size, as a fixed camera
frames a person. Frames stay in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from drivers.camera.sources import IMAGE_SUFFIXES


def fit_into(img: np.ndarray, width: int, height: int, background: int = 96) -> np.ndarray:
    """Scale ``img`` to fit ``width`` x ``height`` keeping its aspect, pad the rest."""
    h, w = img.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(img, (nw, nh), interpolation=interp)
    frame = np.full((height, width, 3), background, dtype=np.uint8)
    x, y = (width - nw) // 2, (height - nh) // 2
    frame[y : y + nh, x : x + nw] = resized
    return frame


class SceneFolderSource:
    """Frames of whatever image is in ``folder`` now (None while it is empty)."""

    def __init__(
        self,
        folder: Path,
        *,
        size: tuple[int, int] = (640, 480),
        fps: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.folder = folder
        self.size = size
        self._period = 1.0 / fps if fps > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._cached: tuple[Path, int, np.ndarray] | None = None
        self.stats: dict[str, int] = {"frames": 0, "empty": 0, "unreadable": 0}

    def read(self) -> np.ndarray | None:
        """The current scene as a frame, paced at the frame rate."""
        now = self._clock()
        if now < self._next:
            self._sleep(self._next - now)
        self._next = max(now, self._next) + self._period
        scene = self._current()
        if scene is None:
            self.stats["empty"] += 1
            return None
        self.stats["frames"] += 1
        return scene.copy()

    def close(self) -> None:
        """Nothing to release."""
        self._cached = None

    def _current(self) -> np.ndarray | None:
        try:
            images = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        except FileNotFoundError:
            return None
        if not images:
            return None
        path = images[0]
        try:
            stamp = path.stat().st_mtime_ns ^ hash(str(path.resolve()))
        except FileNotFoundError:
            return None
        if self._cached is not None and self._cached[:2] == (path, stamp):
            return self._cached[2]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            self.stats["unreadable"] += 1
            return None
        frame = fit_into(img, *self.size)
        self._cached = (path, stamp, frame)
        return frame

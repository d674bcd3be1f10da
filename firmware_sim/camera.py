"""A simulated door camera: shows a photo, a sequence of photos, or nobody.

The building or a test tells it what is in front of the lens; it renders
frames of a set size (480p, 720p or any W x H) by scaling the photo to fit and
padding it with a plain background, as a fixed camera would frame a person.
It satisfies :class:`drivers.camera.FrameSource`. Frames stay in memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from drivers.camera.scenes import fit_into

SIZES: dict[str, tuple[int, int]] = {"480p": (640, 480), "720p": (1280, 720), "1080p": (1920, 1080)}

Scene = Path | np.ndarray | bytes


def _load(scene: Scene) -> np.ndarray:
    img: np.ndarray | None
    if isinstance(scene, np.ndarray):
        img = scene
    elif isinstance(scene, bytes):
        img = cv2.imdecode(np.frombuffer(scene, np.uint8), cv2.IMREAD_COLOR)
    else:
        img = cv2.imread(str(scene), cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.shape[2] != 3:
        what = scene if isinstance(scene, Path) else type(scene).__name__
        raise ValueError(f"simulated camera cannot show {what}")
    return img


class SimCamera:
    """Thread-safe simulated camera; ``read()`` is paced at ``fps`` (None: unpaced)."""

    def __init__(
        self,
        size: str | tuple[int, int] = "480p",
        *,
        fps: float | None = None,
        background: int = 96,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(size, str):
            if size not in SIZES:
                raise ValueError(f"simulated camera size must be one of {sorted(SIZES)} or (w, h)")
            size = SIZES[size]
        self.width, self.height = size
        self._background = background
        self._interval = 1.0 / fps if fps else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()
        self._frames: list[np.ndarray] = []
        self._index = 0
        self._loop = True
        self._online = True
        self.frames_served = 0

    def show(self, scene: Scene) -> None:
        """Put one photo in front of the camera."""
        self.show_sequence([scene])

    def show_sequence(self, scenes: Sequence[Scene], *, loop: bool = True) -> None:
        """Cycle through photos (one per frame); without ``loop`` the last one stays."""
        frames = [fit_into(_load(s), self.width, self.height, self._background) for s in scenes]
        with self._lock:
            self._frames, self._index, self._loop = frames, 0, loop

    def show_nothing(self) -> None:
        """Nobody in front of the camera: empty background frames."""
        with self._lock:
            self._frames, self._index = [], 0

    def set_online(self, online: bool) -> None:
        """Unplug (False) or plug back (True) the camera; offline reads give None."""
        with self._lock:
            self._online = online

    def read(self) -> np.ndarray | None:
        if self._interval:
            now = self._clock()
            if now < self._next:
                self._sleep(self._next - now)
                now = self._next
            self._next = now + self._interval
        with self._lock:
            if not self._online:
                return None
            self.frames_served += 1
            if not self._frames:
                return np.full((self.height, self.width, 3), self._background, dtype=np.uint8)
            frame = self._frames[self._index]
            if self._index + 1 < len(self._frames):
                self._index += 1
            elif self._loop:
                self._index = 0
            return frame.copy()

    def close(self) -> None:
        self.set_online(False)

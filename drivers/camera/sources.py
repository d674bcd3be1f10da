"""Frame sources: live cameras through OpenCV, and photo folders or video files for simulation.

Every source yields BGR ``numpy`` frames held in memory only; nothing here
writes an image anywhere. ``read()`` returns the next frame, or None when no
frame is available now (stream down, reconnect pending, folder exhausted); it
never raises for a camera problem, so the caller's loop just tries again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


@runtime_checkable
class FrameSource(Protocol):
    """Anything that hands out BGR frames."""

    def read(self) -> np.ndarray | None:
        """The next frame, or None if none is available right now."""
        ...

    def close(self) -> None:
        """Release the device or file."""
        ...


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` the sources use."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...

    def get(self, prop: int) -> float: ...

    def set(self, prop: int, value: float) -> bool: ...


def is_stream_url(source: str) -> bool:
    return source.split("://", 1)[0].lower() in {"rtsp", "rtsps", "rtmp", "http", "https"}


def is_v4l2_device(source: int | str) -> bool:
    """A V4L2 index, a /dev/videoN path, or a link to one (udev names such as
    /dev/lockgw-camera-L101)."""
    if isinstance(source, int):
        return True
    return os.path.realpath(source).startswith("/dev/video")


def open_capture(source: int | str, open_timeout_s: float = 5.0) -> Capture:
    """Open a V4L2 device (index or /dev path), a stream URL, or a file with OpenCV."""
    if isinstance(source, int) or is_v4l2_device(source):
        cap = cv2.VideoCapture(source, cv2.CAP_V4L2)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap
    if is_stream_url(source):
        # TCP for RTSP: UDP drops packets on busy building networks and tears frames.
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        ms = int(open_timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap
    return cv2.VideoCapture(source)


def describe(source: int | str) -> str:
    """A loggable name for a source: stream URLs lose their credentials."""
    if isinstance(source, int):
        return f"video{source}"
    if is_stream_url(source):
        scheme, rest = source.split("://", 1)
        return f"{scheme}://{rest.rsplit('@', 1)[-1].split('/', 1)[0]}"
    return source


class OpenCvSource:
    """A live camera (V4L2 index or path, or RTSP URL) that reconnects when it drops.

    After a failed open or a failed read the capture is released and opened
    again after a back-off that doubles from ``backoff_initial_s`` up to
    ``backoff_max_s``; the first good frame resets it.
    """

    def __init__(
        self,
        source: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        opener: Callable[[int | str], Capture] = open_capture,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._size = (width, height)
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._backoff = backoff_initial_s
        self._opener = opener
        self._clock = clock
        self._cap: Capture | None = None
        self._next_attempt = 0.0
        self.stats: dict[str, int] = {"opens": 0, "open_failures": 0, "drops": 0, "frames": 0}

    @property
    def connected(self) -> bool:
        return self._cap is not None

    def _schedule_retry(self) -> None:
        self._next_attempt = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)

    def _open(self) -> bool:
        cap = self._opener(self.source)
        if not cap.isOpened():
            cap.release()
            self.stats["open_failures"] += 1
            log.warning("camera did not open", extra={"camera": describe(self.source)})
            self._schedule_retry()
            return False
        w, h = self._size
        if w and h:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
        self._cap = cap
        self.stats["opens"] += 1
        return True

    def read(self) -> np.ndarray | None:
        if self._cap is None and (self._clock() < self._next_attempt or not self._open()):
            return None
        assert self._cap is not None
        ok, frame = self._cap.read()
        if not ok or frame is None or frame.size == 0:
            self.stats["drops"] += 1
            log.warning("camera stream dropped", extra={"camera": describe(self.source)})
            self._cap.release()
            self._cap = None
            self._schedule_retry()
            return None
        self._backoff = self._backoff_initial
        self.stats["frames"] += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class _Pacer:
    """Spaces reads ``1/fps`` apart (no pacing when fps is None)."""

    def __init__(
        self,
        fps: float | None,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._interval = 1.0 / fps if fps else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    def wait(self) -> None:
        now = self._clock()
        if self._next is not None and now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self._interval


class FolderSource:
    """Photos from a folder, in name order, at a set rate; loops by default."""

    def __init__(
        self,
        folder: Path,
        *,
        fps: float | None = 5.0,
        loop: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.paths: Sequence[Path] = sorted(
            p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.paths:
            raise FileNotFoundError(f"no images in camera folder {folder}")
        self._loop = loop
        self._pacer = _Pacer(fps, clock, sleep)
        self._index = 0
        self.stats: dict[str, int] = {"frames": 0, "unreadable": 0}

    def read(self) -> np.ndarray | None:
        for _ in range(len(self.paths)):
            if self._index >= len(self.paths):
                if not self._loop:
                    return None
                self._index = 0
            path = self.paths[self._index]
            self._index += 1
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                self.stats["unreadable"] += 1
                log.warning("camera folder image unreadable", extra={"file": path.name})
                continue
            self._pacer.wait()
            self.stats["frames"] += 1
            return frame
        return None

    def close(self) -> None:
        self._index = len(self.paths)
        self._loop = False


class VideoFileSource:
    """Frames of a video file at a set rate (default: the file's own), looping by default."""

    def __init__(
        self,
        path: Path,
        *,
        fps: float | None = None,
        loop: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"camera video file not found: {self.path}")
        self._cap: Capture | None = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise ValueError(f"camera video file not readable by OpenCV: {self.path}")
        if fps is None:
            file_fps = self._cap.get(cv2.CAP_PROP_FPS)
            fps = file_fps if 0 < file_fps < 240 else 15.0
        self.fps = fps
        self._loop = loop
        self._pacer = _Pacer(fps, clock, sleep)
        self.stats: dict[str, int] = {"frames": 0, "rewinds": 0}

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, frame = self._cap.read()
        if (not ok or frame is None) and self._loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self.stats["rewinds"] += 1
            ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        self._pacer.wait()
        self.stats["frames"] += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

"""Door camera specifications: the configuration's ``camera`` text, parsed once.

``/dev/videoN``, a V4L2 index or a udev link name: a local camera; ``rtsp://…``
and other stream URLs: a network camera; ``folder:DIR``: a simulated camera whose
view is a scene folder (see :mod:`drivers.camera.scenes`); anything else: a
video file read through OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from drivers.camera.scenes import SceneFolderSource
from drivers.camera.sources import FrameSource, OpenCvSource, describe

FOLDER_PREFIX = "folder:"
FRAME_WIDTH, FRAME_HEIGHT = 640, 480


@dataclass(frozen=True)
class CameraSpec:
    """One door's camera, as configured."""

    kind: Literal["scene_folder", "capture"]
    source: int | str  # a V4L2 index, a device path, a stream URL or a file
    folder: Path | None = None

    @property
    def label(self) -> str:
        """A loggable name (stream URLs lose their credentials)."""
        return f"scene folder {self.folder}" if self.folder is not None else describe(self.source)


def parse_camera_spec(text: str) -> CameraSpec:
    """The spec of a ``camera`` setting; a ValueError names what is wrong."""
    text = text.strip()
    if not text:
        raise ValueError("camera: empty setting")
    if text.startswith(FOLDER_PREFIX):
        folder = text.removeprefix(FOLDER_PREFIX)
        if not folder:
            raise ValueError("camera: folder: needs a directory (folder:/path/to/scene)")
        return CameraSpec("scene_folder", folder, Path(folder))
    return CameraSpec("capture", int(text) if text.isdigit() else text)


def open_camera(spec: CameraSpec) -> FrameSource:
    """The frame source for ``spec`` (opened lazily by the source itself)."""
    if spec.folder is not None:
        return SceneFolderSource(spec.folder)
    return OpenCvSource(spec.source, width=FRAME_WIDTH, height=FRAME_HEIGHT)

"""Camera frame sources (OpenCV devices and streams, photo folders, video files)."""

from drivers.camera.sources import (
    FolderSource,
    FrameSource,
    OpenCvSource,
    VideoFileSource,
    open_capture,
)

__all__ = ["FolderSource", "FrameSource", "OpenCvSource", "VideoFileSource", "open_capture"]

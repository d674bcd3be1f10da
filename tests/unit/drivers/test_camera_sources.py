"""Frame sources with real OpenCV: folders, video files, reconnecting captures, the sim camera."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.camera import FolderSource, FrameSource, OpenCvSource, VideoFileSource
from drivers.camera.sources import describe
from firmware_sim.camera import SimCamera, fit_into


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(round(s, 6))
        self.now += s


def solid(value: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, np.uint8)


def write_video(path: Path, values: list[int], fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for v in values:
        writer.write(solid(v))
    writer.release()
    return path


def level(frame: np.ndarray | None) -> int:
    assert frame is not None
    return round(float(frame.mean()) / 10) * 10


def test_folder_source_order_loop_and_pacing(tmp_path: Path) -> None:
    for i, v in enumerate((10, 20, 30)):
        cv2.imwrite(str(tmp_path / f"{i}.png"), solid(v))
    (tmp_path / "3.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    clock = FakeClock()
    src = FolderSource(tmp_path, fps=4, clock=clock, sleep=clock.sleep)
    assert isinstance(src, FrameSource)
    got = [level(src.read()) for _ in range(5)]
    assert got == [10, 20, 30, 10, 20]
    assert src.stats["unreadable"] == 1
    assert clock.slept == [0.25] * 4  # one frame every 1/fps
    src.close()
    assert src.read() is None


def test_folder_source_without_loop_ends(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), solid(50))
    src = FolderSource(tmp_path, fps=None, loop=False)
    assert level(src.read()) == 50
    assert src.read() is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        FolderSource(empty)


def test_video_file_source_rate_and_rewind(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", [20, 60, 100], fps=10)
    clock = FakeClock()
    src = VideoFileSource(video, clock=clock, sleep=clock.sleep)
    assert src.fps == pytest.approx(10)
    got = [level(src.read()) for _ in range(5)]
    assert got == [20, 60, 100, 20, 60]
    assert src.stats["rewinds"] == 1
    assert clock.slept == [pytest.approx(0.1)] * 4
    src.close()
    assert src.read() is None
    once = VideoFileSource(video, fps=50, loop=False)
    assert [level(once.read()) for _ in range(3)] == [20, 60, 100]
    assert once.read() is None
    with pytest.raises(FileNotFoundError, match=r"missing\.avi"):
        VideoFileSource(tmp_path / "missing.avi")


def test_opencv_source_reconnects_with_backoff(tmp_path: Path) -> None:
    """A capture that is absent, then appears, then ends (a dropped stream), then resumes."""
    path = tmp_path / "stream.avi"
    clock = FakeClock()
    src = OpenCvSource(str(path), backoff_initial_s=1.0, backoff_max_s=4.0, clock=clock)
    assert src.read() is None and src.stats["open_failures"] == 1
    assert src.read() is None and src.stats["open_failures"] == 1  # waiting out the back-off
    clock.now += 1.0
    assert src.read() is None and src.stats["open_failures"] == 2
    clock.now += 1.5  # back-off doubled to 2 s: not yet
    assert src.read() is None and src.stats["open_failures"] == 2
    write_video(path, [40, 80])
    clock.now += 0.5
    assert level(src.read()) == 40 and src.connected
    assert level(src.read()) == 80
    assert src.read() is None  # end of stream = a drop
    assert src.stats["drops"] == 1 and not src.connected
    clock.now += 1.0  # a good frame reset the back-off to its initial value
    assert level(src.read()) == 40
    assert src.stats["opens"] == 2
    src.close()


def test_opencv_source_backoff_is_capped() -> None:
    opened: list[float] = []
    clock = FakeClock()

    class Dead:
        def isOpened(self) -> bool:
            return False

        def release(self) -> None:
            pass

    def opener(source: int | str) -> Dead:
        opened.append(clock.now)
        return Dead()

    src = OpenCvSource(0, backoff_initial_s=1, backoff_max_s=4, opener=opener, clock=clock)  # type: ignore[arg-type]
    for _ in range(200):
        src.read()
        clock.now += 0.5
    gaps = np.diff(opened)
    assert list(gaps[:3]) == [1.0, 2.0, 4.0] and max(gaps) == 4.0


def test_stream_names_in_logs_lose_credentials() -> None:
    assert describe("rtsp://admin:secret@10.0.0.5:554/stream1") == "rtsp://10.0.0.5:554"
    assert describe(2) == "video2"


def test_sim_camera_sizes_and_scenes(tmp_path: Path) -> None:
    tall = np.full((400, 100, 3), 200, np.uint8)
    frame = fit_into(tall, 640, 480)
    assert frame.shape == (480, 640, 3)
    assert frame[:, 270:370].mean() == pytest.approx(200, abs=1)  # 120 x 480 photo in the middle
    assert frame[:, :200].mean() == pytest.approx(96)

    cam = SimCamera("720p")
    assert isinstance(cam, FrameSource)
    cam.show_nothing()
    assert cam.read().shape == (720, 1280, 3)  # type: ignore[union-attr]
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), solid(30))
    cam = SimCamera("480p")  # 4:3 like the test images, so they fill the frame
    cam.show_sequence([png, solid(150), cv2.imencode(".png", solid(90))[1].tobytes()], loop=False)
    assert [level(cam.read()) for _ in range(4)] == [30, 150, 90, 90]
    cam.set_online(False)
    assert cam.read() is None
    with pytest.raises(ValueError, match="cannot show"):
        cam.show(b"garbage")
    with pytest.raises(ValueError, match="size"):
        SimCamera("4k")


def test_sim_camera_rate() -> None:
    cam = SimCamera((320, 240), fps=20)
    cam.show(solid(70))
    t0 = time.monotonic()
    for _ in range(5):
        cam.read()
    assert time.monotonic() - t0 >= 4 * 0.05 * 0.9


def test_udev_names_of_cameras_open_with_v4l2(tmp_path: Path) -> None:
    from drivers.camera.sources import is_v4l2_device

    link = tmp_path / "lockgw-camera-L101"
    link.symlink_to("/dev/video7")
    assert is_v4l2_device(str(link))
    assert is_v4l2_device("/dev/video0") and is_v4l2_device(0)
    assert not is_v4l2_device("rtsp://cam.local/stream")
    assert not is_v4l2_device(str(tmp_path / "clip.mjpg"))

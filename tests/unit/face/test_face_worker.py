"""The face worker process: real inference, and a stuck inference never stalls the caller."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.face import FaceSettings, FaceWorker, Reason, verify_attempts
from agent.face.modelfiles import ModelFileError
from agent.face.worker import verify_burst
from firmware_sim.camera import SimCamera
from tests.support.face import FACES, KNN_TRAIN, photo, require_faces

LOAD_S = 90.0  # spawning and loading the models, generous for a loaded 2-core machine


@pytest.fixture(scope="module")
def worker() -> Iterator[FaceWorker]:
    require_faces()
    w = FaceWorker(FaceSettings(), timeout_s=20.0, test_hooks=True)
    w.start()
    assert w.wait_ready(LOAD_S), "face worker did not load its models"
    yield w
    w.close()


@pytest.fixture(scope="module")
def ref(worker: FaceWorker) -> bytes:
    template = worker.encode_reference((KNN_TRAIN / "obama" / "obama.jpg").read_bytes())
    assert isinstance(template, bytes)
    return template


def live_frame(name: str = "obama2.jpg", who: str = "obama") -> np.ndarray:
    cam = SimCamera("480p")
    cam.show(photo(KNN_TRAIN / who / name))
    frame = cam.read()
    assert frame is not None
    return frame


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_verify_in_the_worker(worker: FaceWorker, ref: bytes) -> None:
    accepted = worker.verify(live_frame(), ref)
    assert accepted.accepted and accepted.reason is Reason.MATCH
    assert accepted.face_jpeg
    refused = worker.verify(live_frame("biden2.jpg", "biden"), ref)
    assert not refused.accepted and refused.reason is Reason.NO_MATCH
    rss = worker.rss_bytes()
    assert rss is not None and rss > 20 * 2**20  # the models are loaded over there
    off = FaceWorker(FaceSettings(liveness="off"), timeout_s=1.0)
    try:
        assert off.liveness([live_frame()]).reason == "off"  # answered without the child
    finally:
        off.close()


def test_worker_error_is_a_failed_attempt_and_worker_survives(
    worker: FaceWorker, ref: bytes
) -> None:
    before = worker.stats()["errors"]
    bad = worker.verify("not a frame", ref)  # type: ignore[arg-type]
    assert not bad.accepted and bad.reason is Reason.WORKER_ERROR
    assert worker.stats()["errors"] == before + 1
    assert worker.verify(live_frame(), ref).accepted


def test_stuck_inference_times_out_without_stalling_the_loop(
    worker: FaceWorker, ref: bytes
) -> None:
    """A daemon-like loop keeps ticking while a door thread's request is stuck and killed."""
    first_pid = worker.pid
    restarts = worker.stats()["restarts"]
    ticks: list[float] = []
    outcome: dict[str, object] = {}

    def door_thread() -> None:
        t0 = time.monotonic()
        outcome["answered"] = worker.stall(60.0, timeout=1.5)
        outcome["took"] = time.monotonic() - t0

    with ThreadPoolExecutor(max_workers=2) as pool:
        fut = pool.submit(door_thread)
        time.sleep(0.3)  # let the stall reach the worker
        # A second caller meanwhile gets "busy" within its own timeout, not a hang.
        t0 = time.monotonic()
        busy = pool.submit(worker.verify, live_frame(), ref, 0.3).result(timeout=10)
        assert busy.reason is Reason.BUSY and time.monotonic() - t0 < 5
        # The "main loop": must keep serving while the request is stuck.
        while not fut.done():
            ticks.append(time.monotonic())
            time.sleep(0.02)
        fut.result()

    assert outcome["answered"] is False
    assert 1.4 <= float(outcome["took"]) < 10.0  # type: ignore[arg-type]
    gaps = np.diff(ticks)
    assert len(ticks) > 20 and gaps.max() < 1.0
    assert worker.stats()["timeouts"] >= 1
    assert worker.stats()["restarts"] == restarts + 1
    assert worker.pid != first_pid

    # The fresh worker serves again once its models are loaded, and keeps
    # serving after the thread that restarted it has ended.
    assert worker.wait_ready(LOAD_S)
    again = worker.verify(live_frame(), ref)
    assert again.accepted, again
    time.sleep(0.5)
    assert worker.verify(live_frame(), ref).accepted
    assert worker.stats()["restarts"] == restarts + 1


def test_timeout_returns_failed_verify_result(worker: FaceWorker, ref: bytes) -> None:
    assert worker.wait_ready(LOAD_S)
    stuck = threading.Thread(target=worker.stall, args=(60.0, 1.0))
    stuck.start()
    time.sleep(0.2)
    stuck.join(timeout=15)
    assert not stuck.is_alive()
    # While the replacement loads its models (over a second), a verify with a
    # short timeout fails closed at once instead of killing it again.
    starting = worker.stats()["starting"]
    restarts = worker.stats()["restarts"]
    t0 = time.monotonic()
    result = worker.verify(live_frame(), ref, timeout=0.05)
    assert not result.accepted and result.reason is Reason.WORKER_STARTING
    assert time.monotonic() - t0 < 5
    assert worker.stats()["starting"] == starting + 1
    assert worker.stats()["restarts"] == restarts
    assert wait_for(lambda: worker.wait_ready(1.0), LOAD_S)
    assert worker.verify(live_frame(), ref).accepted


def test_missing_model_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "resnet.dat"
    with pytest.raises(FileNotFoundError, match=r"resnet\.dat"):
        FaceWorker(FaceSettings(model="dlib", liveness="off", recognition_model=missing))
    with pytest.raises(ModelFileError, match=r"SHA256SUMS"):
        FaceWorker(FaceSettings(models_dir=tmp_path))


NUAA = FACES / "nuaa"


def nuaa_frames(kind: str, person: str, n: int) -> list[np.ndarray]:
    require_faces()
    return [photo(p) for p in sorted((NUAA / kind / person).glob("*.jpg"))[:n]]


def test_printed_photo_is_refused_and_live_frames_pass(worker: FaceWorker) -> None:
    """PAD over a burst in the worker: the same person, live at the webcam or printed."""
    live = worker.liveness(nuaa_frames("live", "0003", 3))
    assert live.passed and live.reason == "live" and live.score is not None
    assert live.score >= worker.settings.pad_threshold and live.faces == 3
    attack = worker.liveness(nuaa_frames("attack", "0003", 3))
    assert not attack.passed and attack.reason == "attack"
    assert attack.score is not None and attack.score < worker.settings.pad_threshold
    nobody = worker.liveness([np.full((480, 640, 3), 90, np.uint8)])
    assert not nobody.passed and nobody.reason == "no_face"
    assert live.as_record("pad")["score"] == live.score


def test_burst_matches_on_any_frame_and_fuses_pad(worker: FaceWorker) -> None:
    """A guest is refused only when no frame of the attempt matches; PAD is the mean
    live probability over the attempt's frames."""
    ref_photo = (sorted((NUAA / "live" / "0005").glob("*.jpg"))[0]).read_bytes()
    reference = worker.encode_reference(ref_photo)
    assert isinstance(reference, bytes)
    frames = nuaa_frames("live", "0005", 8)[1:4]
    cam = SimCamera("480p")
    blurred = cv2.GaussianBlur(frames[0], (0, 0), 6)
    cam.show_sequence([blurred, frames[1], frames[2]], loop=False)
    face, liveness = verify_burst(worker, cam.read, reference, attempts=3)
    assert face.accepted and liveness is not None and liveness.passed
    assert liveness.frames == 3 and liveness.faces == 2  # the blurred frame has no PAD score
    # Matched and live on two scored frames: the attempt ends without the third.
    cam.show_sequence(frames, loop=False)
    served = cam.frames_served
    face, liveness = verify_burst(worker, cam.read, reference, attempts=3)
    assert face.accepted and liveness is not None and liveness.passed
    assert cam.frames_served - served == 2 and liveness.faces == 2
    cam.show_sequence(nuaa_frames("attack", "0005", 3), loop=False)
    face, liveness = verify_burst(worker, cam.read, reference, attempts=3)
    assert liveness is not None and not liveness.passed and liveness.reason == "attack"


def test_closed_worker_fails_closed(ref: bytes) -> None:
    w = FaceWorker(FaceSettings(), timeout_s=1.0)
    w.close()
    result = w.verify(live_frame(), ref)
    assert not result.accepted and result.reason is Reason.WORKER_ERROR


def test_verify_attempts_takes_the_first_match(worker: FaceWorker, ref: bytes) -> None:
    assert worker.wait_ready(LOAD_S)
    cam = SimCamera("480p")
    blurred = cv2.GaussianBlur(photo(KNN_TRAIN / "obama" / "obama2.jpg"), (0, 0), 5)
    cam.show_sequence([blurred, photo(KNN_TRAIN / "obama" / "obama2.jpg")], loop=False)
    result = verify_attempts(worker, cam.read, ref, attempts=3)
    assert result.accepted and cam.frames_served == 2


def test_verify_attempts_without_match_keeps_the_closest_mismatch(
    worker: FaceWorker, ref: bytes
) -> None:
    assert worker.wait_ready(LOAD_S)
    cam = SimCamera("480p")
    cam.show_sequence(
        [photo(KNN_TRAIN / "biden" / "biden2.jpg"), photo(KNN_TRAIN / "biden" / "biden.jpg")]
    )
    each = [worker.verify(cam.read(), ref) for _ in range(2)]  # type: ignore[arg-type]
    result = verify_attempts(worker, cam.read, ref, attempts=4)
    assert result.reason is Reason.NO_MATCH and not result.accepted
    assert result.distance == min(r.distance for r in each if r.distance is not None)
    cam.set_online(False)
    offline = verify_attempts(worker, cam.read, ref, attempts=2)
    assert offline.reason is Reason.NO_FRAME and not offline.accepted
    assert verify_attempts(worker, cam.read, b"bad", attempts=1).reason is Reason.NO_FRAME
    cam.set_online(True)
    bad = verify_attempts(worker, cam.read, b"bad", attempts=5)
    assert bad.reason is Reason.BAD_TEMPLATE


PARENT = """
import sys, threading, time
from agent.face import FaceSettings, FaceWorker
w = FaceWorker(FaceSettings(), timeout_s=600, test_hooks=True)
w.start()
assert w.wait_ready(90)
threading.Thread(target=w.stall, args=(600,), daemon=True).start()
time.sleep(0.5)
print(w.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_stuck_worker_dies_with_its_daemon(repo_root: Path) -> None:
    require_faces()
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=repo_root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.kill()
        parent.wait(timeout=10)
        assert wait_for(lambda: not _alive(child), 10), "worker outlived its daemon"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_worker_started_from_a_short_lived_thread_keeps_running(ref: bytes) -> None:
    """The parent-death signal must follow the daemon, not the thread that restarted it."""
    w = FaceWorker(FaceSettings(), timeout_s=20.0)
    try:
        t = threading.Thread(target=w.start)
        t.start()
        t.join()
        assert w.wait_ready(LOAD_S)
        time.sleep(1.0)
        pid = w.pid
        assert pid is not None and _alive(pid)
        assert w.verify(live_frame(), ref).accepted
        assert w.stats()["restarts"] == 0
    finally:
        w.close()
    assert wait_for(lambda: not _alive(pid), 10)

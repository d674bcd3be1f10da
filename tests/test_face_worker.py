"""The face worker process: real inference, and a stuck inference never stalls the caller."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from agent.face import FaceSettings, FaceWorker, Reason
from firmware_sim.camera import SimCamera
from tests.face_support import KNN_TRAIN, photo, require_faces

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
    assert worker.liveness([live_frame()]).reason == "off"


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

    # The fresh worker serves again once its models are loaded.
    assert worker.wait_ready(LOAD_S)
    again = worker.verify(live_frame(), ref)
    assert again.accepted, again


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
        FaceWorker(FaceSettings(recognition_model=missing))


def test_closed_worker_fails_closed(ref: bytes) -> None:
    w = FaceWorker(FaceSettings(), timeout_s=1.0)
    w.close()
    result = w.verify(live_frame(), ref)
    assert not result.accepted and result.reason is Reason.WORKER_ERROR

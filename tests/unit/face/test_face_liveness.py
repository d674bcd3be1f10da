"""Blink liveness: EAR on the 68-point landmarks over a burst of frames."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agent.face import BlinkDetector, DlibFaceModel, FaceSettings, LivenessOff, load_face_model
from agent.face.liveness import eye_aspect_ratio, face_ear, has_blink
from firmware_sim.camera import SimCamera
from tests.support.face import EXAMPLES, KNN_TRAIN, close_eyes, photo, require_faces


@pytest.fixture(scope="module", params=["dlib", "mobilefacenet"])
def engine(request: pytest.FixtureRequest) -> Any:
    """dlib's HOG boxes, or YuNet's (liveness "pad+blink"), under the same 68-point model."""
    require_faces()
    if request.param == "dlib":
        return DlibFaceModel(FaceSettings(model="dlib", liveness="blink"))
    return load_face_model(FaceSettings(liveness="pad+blink"))


@pytest.fixture(scope="module")
def blink(engine: Any) -> BlinkDetector:
    return BlinkDetector(engine.landmarks68)


def test_eye_aspect_ratio_geometry() -> None:
    # corners 4 apart, lids 1 above and below: EAR = (2 + 2) / (2 * 4) = 0.5
    eye = np.array([(0, 0), (1, -1), (3, -1), (4, 0), (3, 1), (1, 1)], dtype=float)
    assert eye_aspect_ratio(eye) == pytest.approx(0.5)
    shut = eye.copy()
    shut[[1, 2, 4, 5], 1] = 0
    assert eye_aspect_ratio(shut) == 0.0


def test_blink_series() -> None:
    kw = {"closed_ratio": 0.7, "reopen_ratio": 0.85, "min_open": 0.15}
    assert has_blink([0.3, 0.3, 0.12, 0.29], **kw)
    assert has_blink([0.3, None, 0.1, None, 0.28], **kw)
    assert not has_blink([0.3, 0.29, 0.31, 0.3], **kw)  # a still photo
    assert not has_blink([0.3, 0.1, 0.12], **kw)  # closed, never reopened
    assert not has_blink([0.12, 0.3], **kw)  # opened, never closed after
    assert not has_blink([0.1, 0.05, 0.1], **kw)  # no open eye ever seen


def test_still_photo_burst_fails(engine: Any, blink: BlinkDetector) -> None:
    cam = SimCamera("480p")
    cam.show(photo(EXAMPLES / "obama-480p.jpg"))
    frames = [cam.read() for _ in range(6)]
    result = blink.check([f for f in frames if f is not None])
    assert not result.passed and result.reason == "no_blink"
    assert result.faces == 6


def test_blink_burst_passes(engine: Any, blink: BlinkDetector) -> None:
    for path in (EXAMPLES / "obama-480p.jpg", KNN_TRAIN / "biden" / "biden2.jpg"):
        face = photo(path)
        landmarks = engine.landmarks68(face)
        assert landmarks is not None
        shut = close_eyes(face, landmarks)
        shut_lm = engine.landmarks68(shut)
        assert shut_lm is not None and face_ear(shut_lm) < 0.7 * face_ear(landmarks)
        result = blink.check([face, face, shut, face])
        assert result.passed and result.reason == "blink", (path.name, result)


def test_no_face_burst_fails(blink: BlinkDetector) -> None:
    cam = SimCamera("480p")
    cam.show_nothing()
    frames = [cam.read() for _ in range(3)]
    result = blink.check([f for f in frames if f is not None])
    assert not result.passed and result.reason == "no_face"


def test_policy_off_passes_and_says_so() -> None:
    result = LivenessOff().check([np.zeros((4, 4, 3), np.uint8)])
    assert result.passed and result.reason == "off"


def test_bad_ratios_rejected() -> None:
    with pytest.raises(ValueError, match="ratio"):
        BlinkDetector(lambda f: None, closed_ratio=0.9, reopen_ratio=0.8)

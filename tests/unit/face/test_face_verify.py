"""1:1 verification on real photos: matches, refusals and the reason for each unusable frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.face import FaceEngine, FaceSettings, Reason, template_from_bytes, template_to_bytes
from agent.face.verify import DEFAULT_THRESHOLD, TEMPLATE_BYTES, BadTemplateError
from firmware_sim.camera import SimCamera
from tests.support.face import EXAMPLES, KNN_TRAIN, TEST_IMAGES, jpeg, photo, require_faces


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    require_faces()
    return FaceEngine(FaceSettings())


@pytest.fixture(scope="module")
def obama_ref(engine: FaceEngine) -> bytes:
    ref = engine.encode_reference((KNN_TRAIN / "obama" / "obama.jpg").read_bytes())
    assert isinstance(ref, bytes)
    return ref


def frame_480p(path: Path) -> np.ndarray:
    cam = SimCamera("480p")
    cam.show(photo(path))
    frame = cam.read()
    assert frame is not None and frame.shape == (480, 640, 3)
    return frame


def test_default_threshold_is_stricter_than_the_library() -> None:
    assert DEFAULT_THRESHOLD < 0.6
    assert FaceSettings().threshold == DEFAULT_THRESHOLD


# Labelled pairs: (reference photo, live photo) of the same person.
SAME = [
    (KNN_TRAIN / "obama" / "obama.jpg", KNN_TRAIN / "obama" / "obama2.jpg"),
    (KNN_TRAIN / "obama" / "obama.jpg", EXAMPLES / "obama-720p.jpg"),
    (KNN_TRAIN / "biden" / "biden.jpg", KNN_TRAIN / "biden" / "biden2.jpg"),
    (KNN_TRAIN / "kit_harington" / "john1.jpeg", KNN_TRAIN / "kit_harington" / "john2.jpeg"),
    (KNN_TRAIN / "rose_leslie" / "img1.jpg", KNN_TRAIN / "rose_leslie" / "img2.jpg"),
]
DIFFERENT = [
    (KNN_TRAIN / "obama" / "obama.jpg", KNN_TRAIN / "biden" / "biden2.jpg"),
    (KNN_TRAIN / "biden" / "biden.jpg", EXAMPLES / "obama-480p.jpg"),
    (KNN_TRAIN / "kit_harington" / "john1.jpeg", KNN_TRAIN / "alex_lacamoire" / "img1.jpg"),
    (KNN_TRAIN / "rose_leslie" / "img1.jpg", EXAMPLES / "lin-manuel-miranda.png"),
]


@pytest.mark.parametrize(("ref", "live"), SAME, ids=lambda p: p.stem)
def test_same_person_is_accepted(engine: FaceEngine, ref: Path, live: Path) -> None:
    template = engine.encode_reference(ref.read_bytes())
    assert isinstance(template, bytes)
    result = engine.verify(frame_480p(live), template)
    assert result.accepted, result
    assert result.reason is Reason.MATCH
    assert result.distance is not None and result.distance <= result.threshold
    assert result.threshold == DEFAULT_THRESHOLD


@pytest.mark.parametrize(("ref", "live"), DIFFERENT, ids=lambda p: p.stem)
def test_different_person_is_refused(engine: FaceEngine, ref: Path, live: Path) -> None:
    template = engine.encode_reference(ref.read_bytes())
    assert isinstance(template, bytes)
    result = engine.verify(frame_480p(live), template)
    assert not result.accepted
    assert result.reason is Reason.NO_MATCH
    assert result.distance is not None and result.distance > result.threshold


def test_result_carries_the_face_crop_in_memory(engine: FaceEngine, obama_ref: bytes) -> None:
    frame = frame_480p(KNN_TRAIN / "obama" / "obama2.jpg")
    result = engine.verify(frame, obama_ref)
    assert result.face_jpeg is not None
    crop = cv2.imdecode(np.frombuffer(result.face_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None and 60 < crop.shape[0] < frame.shape[0]
    assert "face_jpeg" not in repr(result)  # personal data stays out of logs


def test_threshold_is_configuration(obama_ref: bytes) -> None:
    lax = FaceEngine(FaceSettings(threshold=0.9))
    result = lax.verify(frame_480p(KNN_TRAIN / "biden" / "biden2.jpg"), obama_ref)
    assert result.accepted and result.threshold == 0.9


def test_recognition_model_is_configuration(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model.dat"
    with pytest.raises(FileNotFoundError, match=r"no-such-model\.dat"):
        FaceEngine(FaceSettings(recognition_model=missing))
    with pytest.raises(ValueError, match="threshold"):
        FaceSettings(threshold=0)


def _tiny(img: np.ndarray) -> np.ndarray:
    """The photo shrunk so the face is ~50 px, inside a 480p frame."""
    small = cv2.resize(img, None, fx=0.17, fy=0.17, interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 96, np.uint8)
    frame[100 : 100 + small.shape[0], 200 : 200 + small.shape[1]] = small
    return frame


def test_each_unusable_frame_has_its_own_reason(engine: FaceEngine, obama_ref: bytes) -> None:
    obama = photo(KNN_TRAIN / "obama" / "obama.jpg")
    cases = {
        Reason.NO_FACE: obama[900:, :],  # the suit only
        Reason.MULTIPLE_FACES: photo(EXAMPLES / "two_people.jpg"),
        Reason.FACE_PARTIAL: photo(TEST_IMAGES / "obama_partial_face.jpg"),
        Reason.FACE_TOO_SMALL: _tiny(obama),
        Reason.BLURRED: cv2.GaussianBlur(obama, (0, 0), 4),
        Reason.TOO_DARK: (obama * 0.12).astype(np.uint8),
    }
    got = {want: engine.verify(frame, obama_ref) for want, frame in cases.items()}
    for want, result in got.items():
        assert result.reason is want, (want, result)
        assert not result.accepted and result.distance is None and result.face_jpeg is None
    assert len({r.reason for r in got.values()}) == len(cases)


def test_second_partial_face_and_empty_camera(engine: FaceEngine, obama_ref: bytes) -> None:
    partial2 = engine.verify(photo(TEST_IMAGES / "obama_partial_face2.jpg"), obama_ref)
    assert partial2.reason is Reason.FACE_PARTIAL
    cam = SimCamera("720p")
    cam.show_nothing()
    frame = cam.read()
    assert frame is not None
    assert engine.verify(frame, obama_ref).reason is Reason.NO_FACE


def test_reference_from_small_card_photo(engine: FaceEngine) -> None:
    """An ID card photo is 102 x 126 px: still encodes, and matches the live face."""
    obama = photo(KNN_TRAIN / "obama" / "obama.jpg")
    card = cv2.resize(obama[60:700, 190:710], (102, 126), interpolation=cv2.INTER_AREA)
    template = engine.encode_reference(jpeg(card))
    assert isinstance(template, bytes) and len(template) == TEMPLATE_BYTES
    assert engine.verify(frame_480p(KNN_TRAIN / "obama" / "obama2.jpg"), template).accepted


def test_bad_reference_input_is_refused_with_reason(engine: FaceEngine) -> None:
    assert engine.encode_reference(b"not an image") is Reason.BAD_IMAGE
    assert engine.encode_reference(b"") is Reason.BAD_IMAGE
    two = (EXAMPLES / "two_people.jpg").read_bytes()
    assert engine.encode_reference(two) is Reason.MULTIPLE_FACES


def test_bad_template_and_bad_frame(engine: FaceEngine, obama_ref: bytes) -> None:
    frame = frame_480p(KNN_TRAIN / "obama" / "obama2.jpg")
    assert engine.verify(frame, b"\x00" * 10).reason is Reason.BAD_TEMPLATE
    nan = np.full(128, np.nan).tobytes()
    assert engine.verify(frame, nan).reason is Reason.BAD_TEMPLATE
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    assert engine.verify(grey, obama_ref).reason is Reason.BAD_IMAGE


def test_template_round_trip() -> None:
    enc = np.linspace(-0.2, 0.2, 128)
    blob = template_to_bytes(enc)
    assert len(blob) == TEMPLATE_BYTES
    assert np.array_equal(template_from_bytes(blob), enc)
    with pytest.raises(BadTemplateError):
        template_to_bytes(np.zeros(127))


def test_settings_from_the_gateway_configuration(tmp_path: Path) -> None:
    from agent.config.schema import FaceSection
    from agent.face import settings_from_config

    model = tmp_path / "site-model.dat"
    section = FaceSection(threshold=0.42, model=model, liveness="blink", min_face_px=120)
    settings = settings_from_config(section)
    assert settings.threshold == 0.42 and settings.liveness == "blink"
    assert settings.model_path("recognition") == model
    assert settings.gates.min_face_px == 120

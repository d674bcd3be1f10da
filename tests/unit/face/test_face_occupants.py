"""Occupant counting on real group photos and across the frames of an entry."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from agent.face import FaceModel, FaceSettings, OccupantCounter, load_face_model, watch_entry
from firmware_sim.camera import SimCamera
from tests.support.face import DEEPFACE, EXAMPLES, KNN_TEST, KNN_TRAIN, photo, require_faces


@pytest.fixture(scope="module", params=["mobilefacenet", "dlib"])
def engine(request: pytest.FixtureRequest) -> FaceModel:
    require_faces()
    return load_face_model(FaceSettings(model=request.param, liveness="off"))


def count(engine: FaceModel, *paths: Path) -> int:
    counter = OccupantCounter(engine.settings.same_person)
    for p in paths:
        counter.add_frame(engine.all_encodings(photo(p)))
    return counter.count


@pytest.mark.parametrize(
    ("path", "people"),
    [
        (DEEPFACE / "couple.jpg", 2),
        (EXAMPLES / "two_people.jpg", 2),
        # A third person, a girl looking down at the lower right: YuNet finds her, HOG not.
        (KNN_TEST / "obama_and_biden.jpg", {"mobilefacenet": 3, "dlib": 2}),
        (KNN_TEST / "kit_with_rose.jpg", 2),
        (KNN_TRAIN / "obama" / "obama.jpg", 1),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else str(v),
)
def test_group_photo_counts(engine: FaceModel, path: Path, people: int | dict[str, int]) -> None:
    want = people[engine.name] if isinstance(people, dict) else people
    assert count(engine, path) == want


def test_crowded_selfie_counts_a_lower_bound(engine: FaceModel) -> None:
    """Seven people, three of them turned or cut by the edge: HOG sees the four frontal
    faces, YuNet six. The count never exceeds the people present, and raises the alert."""
    counter = OccupantCounter(engine.settings.same_person)
    counter.add_frame(engine.all_encodings(photo(DEEPFACE / "selfie-many-people.jpg")))
    assert (6 if engine.name == "mobilefacenet" else 4) <= counter.count <= 7
    assert counter.result(verified=1).unregistered == counter.count - 1


def test_same_person_across_frames_counts_once(engine: FaceModel) -> None:
    frames = [
        KNN_TRAIN / "obama" / "obama.jpg",
        KNN_TRAIN / "obama" / "obama2.jpg",
        EXAMPLES / "obama-720p.jpg",
    ]
    assert count(engine, *frames) == 1
    assert count(engine, *frames, KNN_TRAIN / "biden" / "biden.jpg") == 2
    # Obama alone, then Obama and Biden together: two people, not three.
    assert count(engine, frames[0], EXAMPLES / "two_people.jpg") == 2


def test_alert_only_when_more_faces_than_verified_guests() -> None:
    counter = OccupantCounter()
    a, b = np.zeros(128), np.full(128, 0.1)  # 1.13 apart: two people
    counter.add_frame([a, b])
    assert counter.result(verified=2).unregistered == 0
    result = counter.result(verified=1)
    assert (result.faces, result.verified, result.unregistered) == (2, 1, 1)
    assert (result.frames, result.max_in_one_frame) == (1, 2)


def test_two_faces_in_one_frame_are_two_people_even_if_alike() -> None:
    counter = OccupantCounter()
    a = np.zeros(128)
    counter.add_frame([a, a + 0.001])
    assert counter.count == 2
    counter.add_frame([a + 0.002])
    assert counter.count == 2


def test_watch_entry_with_the_simulated_camera(engine: FaceModel) -> None:
    cam = SimCamera("720p")
    cam.show_sequence(
        [
            photo(KNN_TRAIN / "obama" / "obama.jpg"),
            photo(EXAMPLES / "two_people.jpg"),
            photo(KNN_TRAIN / "obama" / "obama2.jpg"),
        ],
        loop=False,
    )
    stop = threading.Event()

    def read() -> np.ndarray | None:
        frame = cam.read()
        if cam.frames_served >= 5:
            stop.set()
        return frame

    def encodings(frame: np.ndarray) -> list[np.ndarray] | None:
        if cam.frames_served == 3:  # the worker timed out on this frame: skipped, not fatal
            return None
        return engine.all_encodings(frame)

    result = watch_entry(
        read,
        encodings,
        verified=1,
        duration_s=60,
        frame_interval_s=0.0,
        stop=stop,
        same_person=engine.settings.same_person,
    )
    assert result.faces == 2 and result.verified == 1 and result.unregistered == 1
    assert result.frames == 4  # five frames read, one skipped
    assert result.unregistered > 0


def test_watch_entry_ends_after_its_duration() -> None:
    cam = SimCamera("480p")
    cam.show_nothing()
    result = watch_entry(cam.read, lambda f: [], verified=1, duration_s=0.3, frame_interval_s=0.05)
    assert result.faces == 0 and 2 <= result.frames <= 10
    assert result.unregistered == 0

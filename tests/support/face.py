"""Helpers for the face tests: the shared photo folder, labelled layouts, frames."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

FACES = Path(__file__).resolve().parents[3] / "shared" / "faces"
FR = FACES / "face_recognition"
DEEPFACE = FACES / "deepface"
EXAMPLES = FR / "examples"
TEST_IMAGES = FR / "tests" / "test_images"
KNN_TRAIN = EXAMPLES / "knn_examples" / "train"
KNN_TEST = EXAMPLES / "knn_examples" / "test"


def require_faces() -> Path:
    """The shared photo folder, or skip the test saying where it was looked for."""
    if not FACES.is_dir():
        pytest.skip(f"face photos not found at {FACES} (../shared/faces beside the repo)")
    return FACES


def photo(path: Path) -> np.ndarray:
    """A BGR photo from the shared folder (skips when the folder is absent)."""
    require_faces()
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"unreadable test photo {path}"
    return img


def jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return bytes(buf)


def deepface_layout(dest: Path) -> Path:
    """``dest/<person>/<image>`` symlinks built from deepface/identities.csv (no copies)."""
    require_faces()
    with open(DEEPFACE / "identities.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            folder = dest / row["person"]
            folder.mkdir(parents=True, exist_ok=True)
            os.symlink(DEEPFACE / row["file"], folder / row["file"])
    return dest


def close_eyes(img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Paint both eyes shut (skin colour from below the eye and a lid line): a blink frame."""
    out = img.copy()
    for sl in (slice(36, 42), slice(42, 48)):
        eye = landmarks[sl].astype(np.int32)
        x0, y0 = eye.min(0)
        x1, y1 = eye.max(0)
        h = max(y1 - y0, 2)
        skin = img[y1 + h + 2 : y1 + 2 * h + 4, x0:x1].reshape(-1, 3).mean(0)
        mask = np.zeros(img.shape[:2], np.uint8)
        cv2.fillPoly(mask, [cv2.convexHull(eye)], 255)
        grow = max(5, (x1 - x0) // 4)
        grown = cv2.dilate(mask, np.ones((grow, grow), np.uint8))
        out[grown > 0] = skin.astype(np.uint8)
        lid = (int(eye[0][0]), int(eye[0][1])), (int(eye[3][0]), int(eye[3][1]))
        cv2.line(out, lid[0], lid[1], (40, 30, 30), max(2, (x1 - x0) // 12))
    return out

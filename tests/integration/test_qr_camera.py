"""QR codes decoded from camera frames: generated codes held up in real face photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import zxingcpp

from drivers.qr.camera import FrameDecoder
from firmware_sim.qrcodes import hold_up, qr_image

CODE = "CTID1.Zm9vYmFyYmF6cXV4.MEUCIQD3"


def photo(faces_dir: Path, name: str) -> np.ndarray:
    img = cv2.imread(str(faces_dir / name))
    assert img is not None, name
    return img


@pytest.mark.parametrize("name", ["deepface/img1.jpg", "face_recognition/examples/obama.jpg"])
def test_a_code_held_up_beside_a_face_is_read(faces_dir: Path, name: str) -> None:
    if not (faces_dir / name).exists():
        pytest.skip(f"{name} not in ../shared/faces")
    frame = hold_up(photo(faces_dir, name), CODE)
    assert frame.shape == (480, 640, 3)
    decoder = FrameDecoder()
    assert decoder.decode(frame) == [CODE]
    assert decoder.decode(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)) == [CODE]
    assert decoder.counters == {"frames": 2, "codes": 2, "refused": 0}


def test_a_face_without_a_code_gives_nothing(faces_dir: Path) -> None:
    frame = cv2.resize(photo(faces_dir, "deepface/img1.jpg"), (640, 480))
    assert FrameDecoder().decode(frame) == []


def test_other_barcode_formats_are_not_codes(faces_dir: Path) -> None:
    dm = zxingcpp.create_barcode(CODE, zxingcpp.BarcodeFormat.DataMatrix)
    img = np.array(zxingcpp.write_barcode_to_image(dm, scale=6))
    frame = cv2.resize(photo(faces_dir, "deepface/img1.jpg"), (640, 480))
    frame[20 : 20 + img.shape[0], 20 : 20 + img.shape[1]] = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    assert zxingcpp.read_barcodes(frame)  # it is a readable barcode ...
    assert FrameDecoder().decode(frame) == []  # ... but not a QR code


def test_a_qr_code_with_control_characters_is_refused_and_counted(faces_dir: Path) -> None:
    frame = hold_up(photo(faces_dir, "deepface/img1.jpg"), "CTID1.bad\x1bcode")
    decoder = FrameDecoder()
    assert decoder.decode(frame) == []
    assert decoder.counters["refused"] == 1


def test_qr_image_is_a_real_qr_code() -> None:
    found = zxingcpp.read_barcodes(qr_image(CODE))
    assert [b.text for b in found] == [CODE]
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode

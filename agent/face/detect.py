"""Face detection and quality gates: which face in a frame, and is it usable.

Detection is the model's (YuNet by default, dlib's HOG for ``model = "dlib"``)
on a copy of the frame downscaled so its longer side is at most
``detect_max_side`` pixels. Boxes are mapped back to the frame's own pixels, so
every gate below is in frame pixels. The largest face is the candidate; a second
face of comparable size makes the frame ambiguous (who is being verified?).

Every refusal has its own :class:`Reason`, so the door's display can tell the
guest what to change (step closer, face the camera, more light).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

# Side of the square, grey, scale-normalised face crop that sharpness and
# exposure are measured on; roughly the 150 px chip the encoder sees.
_MEASURE_SIDE = 128


class Reason(StrEnum):
    """Why a frame, a reference photo or a verification came out as it did."""

    MATCH = "match"
    NO_MATCH = "no_match"
    OK = "ok"
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    FACE_PARTIAL = "face_partial"
    FACE_TOO_SMALL = "face_too_small"
    BLURRED = "blurred"
    TOO_DARK = "too_dark"
    TOO_BRIGHT = "too_bright"
    NO_FRAME = "no_frame"
    BAD_IMAGE = "bad_image"
    BAD_TEMPLATE = "bad_template"
    TEMPLATE_MODEL = "template_model"
    REPLAYED_REFERENCE = "replayed_reference"
    TIMEOUT = "timeout"
    BUSY = "busy"
    WORKER_STARTING = "worker_starting"
    WORKER_ERROR = "worker_error"


@dataclass(frozen=True)
class QualityGates:
    """Thresholds a face must pass before it is encoded (all in frame pixels)."""

    min_face_px: int = 90
    """Smallest accepted width of the detected face box."""
    min_sharpness: float = 80.0
    """Smallest variance of the Laplacian on the 128 px grey face crop."""
    min_brightness: float = 45.0
    """Darkest accepted mean grey level of the face crop (0-255)."""
    max_brightness: float = 215.0
    """Brightest accepted mean grey level of the face crop (0-255)."""
    max_outside_fraction: float = 0.12
    """How much of the face box may fall outside the frame before it is partial."""
    second_face_ratio: float = 0.6
    """A second face at least this fraction of the largest one's width is ambiguous."""


@dataclass(frozen=True)
class FaceBox:
    """A detected face in frame pixels; may extend past the frame's edges."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def outside_fraction(self, frame_w: int, frame_h: int) -> float:
        """Fraction of the box's area that lies outside a frame of that size."""
        area = max(self.width * self.height, 1)
        inner_w = max(0, min(self.right, frame_w) - max(self.left, 0))
        inner_h = max(0, min(self.bottom, frame_h) - max(self.top, 0))
        return 1.0 - (inner_w * inner_h) / area

    def clipped(self, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) clipped to the frame."""
        return (
            max(self.left, 0),
            max(self.top, 0),
            min(self.right, frame_w),
            min(self.bottom, frame_h),
        )


@dataclass(frozen=True)
class Detection:
    """The chosen face of a frame (if any) and the gate verdict on it."""

    reason: Reason
    box: FaceBox | None
    faces: int
    sharpness: float | None = None
    brightness: float | None = None

    @property
    def usable(self) -> bool:
        return self.reason is Reason.OK


# (rgb image, upsample count) -> rectangles as (left, top, right, bottom)
Detector = Callable[[np.ndarray, int], Sequence[tuple[int, int, int, int]]]


def find_faces(
    detector: Detector, rgb: np.ndarray, *, max_side: int, upsample: int = 0
) -> list[FaceBox]:
    """Detect faces on a downscaled copy; boxes in the original frame's pixels, largest first."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = rgb
    if scale < 1.0:
        small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    boxes = [
        FaceBox(
            round(left / scale), round(top / scale), round(right / scale), round(bottom / scale)
        )
        for left, top, right, bottom in detector(small, upsample)
    ]
    boxes.sort(key=lambda b: b.width * b.height, reverse=True)
    return boxes


def measure(rgb: np.ndarray, box: FaceBox) -> tuple[float, float]:
    """(sharpness, brightness) of the face crop, normalised to a 128 px square."""
    h, w = rgb.shape[:2]
    left, top, right, bottom = box.clipped(w, h)
    crop = rgb[top:bottom, left:right]
    if crop.size == 0:
        return 0.0, 0.0
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (_MEASURE_SIDE, _MEASURE_SIDE), interpolation=cv2.INTER_AREA)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    return sharpness, float(grey.mean())


def assess(rgb: np.ndarray, boxes: Sequence[FaceBox], gates: QualityGates) -> Detection:
    """Pick the largest face and run the quality gates on it, in a fixed order."""
    if not boxes:
        return Detection(Reason.NO_FACE, None, 0)
    box = boxes[0]
    n = len(boxes)
    if n > 1 and boxes[1].width >= gates.second_face_ratio * box.width:
        return Detection(Reason.MULTIPLE_FACES, box, n)
    h, w = rgb.shape[:2]
    if box.outside_fraction(w, h) > gates.max_outside_fraction:
        return Detection(Reason.FACE_PARTIAL, box, n)
    if box.width < gates.min_face_px:
        return Detection(Reason.FACE_TOO_SMALL, box, n)
    sharpness, brightness = measure(rgb, box)
    reason = Reason.OK
    if brightness < gates.min_brightness:
        reason = Reason.TOO_DARK
    elif brightness > gates.max_brightness:
        reason = Reason.TOO_BRIGHT
    elif sharpness < gates.min_sharpness:
        reason = Reason.BLURRED
    return Detection(reason, box, n, sharpness, brightness)

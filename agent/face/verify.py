"""1:1 face verification behind one interface: encode a reference once, compare live frames.

:class:`FaceModel` is what the worker serves and the door relies on. Two
implementations: :class:`~agent.face.onnx.OnnxFaceModel` (the default: YuNet,
MobileFaceNet, MiniFASNet on ``cv2.dnn``) and :class:`DlibFaceModel` (``[face]
model = "dlib"``: HOG detector, 5-point landmarks, dlib ResNet). Both live in the
worker process (:mod:`agent.face.worker`), never on the daemon's main loop.

Templates name the model that made them (:mod:`agent.face.template`); a
template of another model is refused as ``template_model`` and re-encoded from
the grant's photo.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from agent.face.detect import Detection, FaceBox, QualityGates, Reason, assess, find_faces
from agent.face.settings import DEFAULT_THRESHOLD, FaceSettings, settings_from_config
from agent.face.template import (
    BadTemplateError,
    distance,
    face_crop_jpeg,
    parse_template,
    prepare_reference,
    template_from_bytes,
    template_to_bytes,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_THRESHOLD",
    "BadTemplateError",
    "DlibFaceModel",
    "FaceModel",
    "FaceSettings",
    "VerifyResult",
    "decode_image",
    "settings_from_config",
    "template_from_bytes",
    "template_to_bytes",
]

DLIB_MODEL_NAME = "dlib"


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of one verification attempt. ``accepted`` only with reason MATCH."""

    accepted: bool
    reason: Reason
    threshold: float
    distance: float | None = None
    face_jpeg: bytes | None = field(default=None, repr=False)
    """The live face crop that was compared (JPEG, memory only; personal data)."""
    elapsed_ms: float = 0.0
    live_score: float | None = None
    """MiniFASNet's live probability of this frame's face (None: PAD not run)."""

    @classmethod
    def failed(cls, reason: Reason, threshold: float, elapsed_ms: float = 0.0) -> VerifyResult:
        return cls(False, reason, threshold, elapsed_ms=elapsed_ms)


class FaceModel(Protocol):
    """What every face model offers the worker (all CPU bound, all in the worker process)."""

    name: str
    settings: FaceSettings

    def detect(self, bgr: np.ndarray, gates: QualityGates | None = None) -> Detection:
        """Detect and gate the main face of a BGR frame."""
        ...

    def faces(self, bgr: np.ndarray) -> list[FaceBox]:
        """Every face box of the frame, largest first."""
        ...

    def encode_reference(self, image: bytes) -> bytes | Reason:
        """Template of the one face in a JPEG/PNG photo, or why none."""
        ...

    def verify(self, bgr: np.ndarray, reference: bytes) -> VerifyResult:
        """Compare the main face of a live frame with a template of this model."""
        ...

    def live_face(self, bgr: np.ndarray) -> bytes | Reason:
        """A JPEG crop of the gated main face of a live frame, or why there is none."""
        ...

    def all_encodings(self, bgr: np.ndarray) -> list[np.ndarray]:
        """Vectors of every face in the frame (occupant counting)."""
        ...


def decode_image(data: bytes) -> np.ndarray | None:
    """JPEG/PNG bytes to a BGR array in memory; None when they are not an image."""
    if not data:
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return img if img is not None and img.size else None


class DlibFaceModel:
    """dlib's HOG detector, 5-point landmarks and ResNet descriptor (``model = "dlib"``)."""

    name = DLIB_MODEL_NAME

    def __init__(self, settings: FaceSettings) -> None:
        import dlib  # deferred: importing dlib costs memory the parent process need not pay

        self.settings = settings
        for which in ("recognition", "landmarks5"):
            path = settings.model_path(which)
            if not path.is_file():
                raise FileNotFoundError(f"face {which} model not found: {path}")
        self._hog = dlib.get_frontal_face_detector()
        self._sp5 = dlib.shape_predictor(str(settings.model_path("landmarks5")))
        self._rec = dlib.face_recognition_model_v1(str(settings.model_path("recognition")))
        self._sp68: object | None = None
        self._dlib = dlib
        if settings.uses_blink:
            self._load_68()

    def _load_68(self) -> object:
        if self._sp68 is None:
            path = self.settings.model_path("landmarks68")
            if not path.is_file():
                raise FileNotFoundError(f"face landmarks68 model not found: {path}")
            self._sp68 = self._dlib.shape_predictor(str(path))
        return self._sp68

    def _detector(self, rgb: np.ndarray, upsample: int) -> list[tuple[int, int, int, int]]:
        rects, _scores, _ = self._hog.run(rgb, upsample, 0.0)
        return [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]

    def faces(self, bgr: np.ndarray) -> list[FaceBox]:
        """Face boxes of a BGR frame, largest first."""
        return self._faces(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def _faces(self, rgb: np.ndarray, *, look_harder: bool = True) -> list[FaceBox]:
        """Faces in the frame, largest first; a second, upsampled pass if none found."""
        boxes = find_faces(self._detector, rgb, max_side=self.settings.detect_max_side)
        if not boxes and look_harder:
            boxes = find_faces(
                self._detector, rgb, max_side=self.settings.detect_max_side, upsample=1
            )
        return boxes

    def detect(self, bgr: np.ndarray, gates: QualityGates | None = None) -> Detection:
        """Detect and gate the main face of a BGR frame."""
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return assess(rgb, self._faces(rgb), gates or self.settings.gates)

    def _encode_box(self, rgb: np.ndarray, box: FaceBox) -> np.ndarray:
        rect = self._dlib.rectangle(box.left, box.top, box.right, box.bottom)
        shape = self._sp5(rgb, rect)
        return np.array(self._rec.compute_face_descriptor(rgb, shape, 1), dtype=np.float64)

    def encode_frame(
        self, bgr: np.ndarray, gates: QualityGates | None = None
    ) -> tuple[np.ndarray | None, Detection]:
        """Descriptor of the gated main face, or None with the detection saying why."""
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        det = assess(rgb, self._faces(rgb), gates or self.settings.gates)
        if not det.usable or det.box is None:
            return None, det
        return self._encode_box(rgb, det.box), det

    def encode_reference(self, image: bytes) -> bytes | Reason:
        """Template of the one face in a grant or card photo; the photo is not kept."""
        bgr = decode_image(image)
        if bgr is None:
            return Reason.BAD_IMAGE
        enc, det = self.encode_frame(prepare_reference(bgr), self.settings.reference_gates)
        if enc is None:
            return det.reason
        return template_to_bytes(enc, DLIB_MODEL_NAME)

    def verify(self, bgr: np.ndarray, reference: bytes) -> VerifyResult:
        """Compare the main face of a live frame with a reference template."""
        start = time.perf_counter()
        threshold = self.settings.threshold

        def ms() -> float:
            return (time.perf_counter() - start) * 1000.0

        ref = reference_and_frame_check(reference, DLIB_MODEL_NAME, bgr)
        if isinstance(ref, Reason):
            return VerifyResult.failed(ref, threshold, ms())
        enc, det = self.encode_frame(bgr)
        if enc is None or det.box is None:
            return VerifyResult.failed(det.reason, threshold, ms())
        dist = distance(enc, ref)
        accepted = dist <= threshold
        return VerifyResult(
            accepted=accepted,
            reason=Reason.MATCH if accepted else Reason.NO_MATCH,
            threshold=threshold,
            distance=round(dist, 4),
            face_jpeg=face_crop_jpeg(bgr, det.box),
            elapsed_ms=ms(),
        )

    def live_face(self, bgr: np.ndarray) -> bytes | Reason:
        """A JPEG crop of the gated main face of a live frame (sent with an electronic ID
        request, before any template is known), or why there is none."""
        det = self.detect(bgr)
        if not det.usable or det.box is None:
            return det.reason
        return face_crop_jpeg(bgr, det.box)

    def all_encodings(self, bgr: np.ndarray) -> list[np.ndarray]:
        """Descriptors of every face in the frame (occupant counting; no gates)."""
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return [self._encode_box(rgb, b) for b in self._faces(rgb, look_harder=False)]

    def landmarks68(self, bgr: np.ndarray) -> np.ndarray | None:
        """68 (x, y) landmarks of the largest face, or None without a face."""
        sp68 = self._load_68()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        boxes = self._faces(rgb, look_harder=False)
        if not boxes:
            return None
        b = boxes[0]
        shape = sp68(rgb, self._dlib.rectangle(b.left, b.top, b.right, b.bottom))  # type: ignore[operator]
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def reference_and_frame_check(reference: bytes, model: str, bgr: np.ndarray) -> np.ndarray | Reason:
    """The reference vector of ``model``, or why this comparison cannot run (a bad or
    other-model template, a frame that is not 8-bit BGR)."""
    try:
        made_by, ref = parse_template(reference)
    except BadTemplateError:
        return Reason.BAD_TEMPLATE
    if made_by != model:
        return Reason.TEMPLATE_MODEL
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        return Reason.BAD_IMAGE
    return ref

"""1:1 face verification: encode a reference once, compare live frames with it.

:class:`FaceEngine` holds the dlib models (HOG detector, 5-point landmarks,
ResNet recognition model, and the 68-point landmarks only when liveness needs
them) and does the work; it is meant to live inside the worker process
(:mod:`agent.face.worker`), never on the daemon's main loop.

Templates are the 128 float64 values of the dlib descriptor as little-endian
bytes (1,024 bytes), so the grants store can seal them with the local
:class:`~agent.state.secretbox.SecretBox`. A template is only comparable with
templates from the same recognition model: change the model, re-encode.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from agent.face.detect import Detection, FaceBox, QualityGates, Reason, assess, find_faces

if TYPE_CHECKING:
    from agent.config.schema import FaceSection

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
"""Default match threshold on the Euclidean descriptor distance (library default 0.6).

Measured on the deepface set (140 genuine, 1,690 impostor pairs): 0.6 lets
0.36 % of impostors through, 0.5 none; see docs/face.md for the table and why a
site with East-Asian guests should measure and set its own value.
"""

TEMPLATE_BYTES = 128 * 8
_TEMPLATE_DTYPE = np.dtype("<f8")
# Reference photos smaller than this (ID card photos are 102 x 126) are
# upscaled before detection; HOG finds nothing under about 80 px.
_REFERENCE_MIN_SIDE = 400
_CROP_MARGIN = 0.25


class BadTemplateError(ValueError):
    """Bytes that are not a face template of this format."""


def default_model_dir() -> Path:
    """Folder of the models shipped in the face_recognition_models package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("package face_recognition_models is not installed")
    return Path(spec.origin).parent / "models"


@dataclass(frozen=True)
class FaceSettings:
    """Face verification configuration (threshold and models are site settings)."""

    threshold: float = DEFAULT_THRESHOLD
    recognition_model: Path | None = None
    """Any dlib ResNet face recognition model file; None: dlib_face_recognition_resnet_model_v1."""
    landmarks5_model: Path | None = None
    landmarks68_model: Path | None = None
    """Needed only when liveness is "blink"; see docs/face.md for its licence."""
    liveness: str = "off"
    """"off" or "blink"."""
    detect_max_side: int = 640
    gates: QualityGates = field(default_factory=QualityGates)
    reference_gates: QualityGates = field(
        default_factory=lambda: QualityGates(min_face_px=60, min_sharpness=20.0)
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 2.0:
            raise ValueError(f"face threshold must be in (0, 2), got {self.threshold}")
        if self.liveness not in ("off", "blink"):
            raise ValueError(f"face liveness must be 'off' or 'blink', got {self.liveness!r}")
        if self.detect_max_side < 160:
            raise ValueError(f"face detect_max_side must be >= 160, got {self.detect_max_side}")

    def model_path(self, which: str) -> Path:
        """Resolved path of "recognition", "landmarks5" or "landmarks68"."""
        custom = {
            "recognition": self.recognition_model,
            "landmarks5": self.landmarks5_model,
            "landmarks68": self.landmarks68_model,
        }[which]
        if custom is not None:
            return custom
        name = {
            "recognition": "dlib_face_recognition_resnet_model_v1.dat",
            "landmarks5": "shape_predictor_5_face_landmarks.dat",
            "landmarks68": "shape_predictor_68_face_landmarks.dat",
        }[which]
        return default_model_dir() / name


def settings_from_config(face: FaceSection) -> FaceSettings:
    """FaceSettings from the ``[face]`` section of the gateway configuration."""
    return FaceSettings(
        threshold=face.threshold,
        recognition_model=face.model,
        liveness=face.liveness,
        gates=QualityGates(min_face_px=face.min_face_px),
    )


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

    @classmethod
    def failed(cls, reason: Reason, threshold: float, elapsed_ms: float = 0.0) -> VerifyResult:
        return cls(False, reason, threshold, elapsed_ms=elapsed_ms)


def template_to_bytes(encoding: np.ndarray) -> bytes:
    """128 float64 descriptor values as 1,024 little-endian bytes."""
    arr = np.asarray(encoding, dtype=_TEMPLATE_DTYPE).reshape(-1)
    if arr.shape != (128,):
        raise BadTemplateError(f"face template must have 128 values, got {arr.size}")
    return arr.tobytes()


def template_from_bytes(blob: bytes) -> np.ndarray:
    """Inverse of :func:`template_to_bytes`; raises BadTemplateError on bad input."""
    if len(blob) != TEMPLATE_BYTES:
        raise BadTemplateError(f"face template must be {TEMPLATE_BYTES} bytes, got {len(blob)}")
    arr = np.frombuffer(blob, dtype=_TEMPLATE_DTYPE).astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise BadTemplateError("face template holds non-finite values")
    return arr


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two descriptors (what dlib's threshold is on)."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def decode_image(data: bytes) -> np.ndarray | None:
    """JPEG/PNG bytes to a BGR array in memory; None when they are not an image."""
    if not data:
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return img if img is not None and img.size else None


def face_crop_jpeg(bgr: np.ndarray, box: FaceBox, quality: int = 90) -> bytes:
    """JPEG of the face box with a margin, encoded in memory."""
    h, w = bgr.shape[:2]
    mx, my = int(box.width * _CROP_MARGIN), int(box.height * _CROP_MARGIN)
    crop = bgr[
        max(box.top - my, 0) : min(box.bottom + my, h),
        max(box.left - mx, 0) : min(box.right + mx, w),
    ]
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return bytes(buf) if ok else b""


class FaceEngine:
    """The loaded models and the detect / encode / compare steps (CPU bound)."""

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
        if settings.liveness == "blink":
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

    def faces(self, rgb: np.ndarray, *, look_harder: bool = True) -> list[FaceBox]:
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
        return assess(rgb, self.faces(rgb), gates or self.settings.gates)

    def _encode_box(self, rgb: np.ndarray, box: FaceBox) -> np.ndarray:
        rect = self._dlib.rectangle(box.left, box.top, box.right, box.bottom)
        shape = self._sp5(rgb, rect)
        return np.array(self._rec.compute_face_descriptor(rgb, shape, 1), dtype=np.float64)

    def encode_frame(
        self, bgr: np.ndarray, gates: QualityGates | None = None
    ) -> tuple[np.ndarray | None, Detection]:
        """Descriptor of the gated main face, or None with the detection saying why."""
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        det = assess(rgb, self.faces(rgb), gates or self.settings.gates)
        if not det.usable or det.box is None:
            return None, det
        return self._encode_box(rgb, det.box), det

    def encode_reference(self, image: bytes) -> bytes | Reason:
        """Template of the one face in a grant or card photo; the photo is not kept."""
        bgr = decode_image(image)
        if bgr is None:
            return Reason.BAD_IMAGE
        h, w = bgr.shape[:2]
        if max(h, w) < _REFERENCE_MIN_SIDE:
            f = _REFERENCE_MIN_SIDE / max(h, w)
            bgr = cv2.resize(bgr, (round(w * f), round(h * f)), interpolation=cv2.INTER_CUBIC)
        enc, det = self.encode_frame(bgr, self.settings.reference_gates)
        if enc is None:
            return det.reason
        return template_to_bytes(enc)

    def verify(self, bgr: np.ndarray, reference: bytes) -> VerifyResult:
        """Compare the main face of a live frame with a reference template."""
        start = time.perf_counter()
        threshold = self.settings.threshold

        def ms() -> float:
            return (time.perf_counter() - start) * 1000.0

        try:
            ref = template_from_bytes(reference)
        except BadTemplateError:
            return VerifyResult.failed(Reason.BAD_TEMPLATE, threshold, ms())
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            return VerifyResult.failed(Reason.BAD_IMAGE, threshold, ms())
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
        return [self._encode_box(rgb, b) for b in self.faces(rgb, look_harder=False)]

    def landmarks68(self, bgr: np.ndarray) -> np.ndarray | None:
        """68 (x, y) landmarks of the largest face, or None without a face."""
        sp68 = self._load_68()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        boxes = self.faces(rgb, look_harder=False)
        if not boxes:
            return None
        b = boxes[0]
        shape = sp68(rgb, self._dlib.rectangle(b.left, b.top, b.right, b.bottom))  # type: ignore[operator]
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

"""The default face model: YuNet detection, MobileFaceNet embedding, MiniFASNet PAD (cv2.dnn).

- **Detection**: ``cv2.FaceDetectorYN`` (YuNet) on a copy of the frame scaled so
  its longer side is at most ``detect_max_side``; boxes, five landmarks and
  scores are mapped back to frame pixels and gated like every model's faces.
- **Alignment**: a least-squares similarity transform (Umeyama) of the five
  landmarks onto the ArcFace 112 x 112 template.
- **Embedding**: MobileFaceNet, 128 values, L2-normalised; two faces compare by
  cosine similarity. The threshold is on ``1 - cosine`` so that, as with dlib,
  a smaller number is closer and ``distance <= threshold`` accepts.
- **Presentation-attack detection**: MiniFASNet V2 (box x2.7) and V1SE (box
  x4.0) on 80 x 80 BGR crops of the face box made square around its centre;
  the live score is the mean over both networks of softmax class 1.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from agent.face.detect import Detection, FaceBox, QualityGates, Reason, assess
from agent.face.modelfiles import (
    MINIFASNET_V1SE,
    MINIFASNET_V2,
    MOBILEFACENET,
    PAD_FILES,
    RECOGNITION_FILES,
    YUNET,
    verify_models,
)
from agent.face.settings import FaceSettings
from agent.face.template import (
    face_crop_jpeg,
    prepare_reference,
    template_to_bytes,
)
from agent.face.verify import VerifyResult, decode_image, reference_and_frame_check

MODEL_NAME = "mobilefacenet"

# ArcFace's five-point template for 112 x 112 crops (eyes, nose tip, mouth corners,
# in YuNet's order: the eye and mouth corner at the smaller x first).
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
_PAD_INPUT = 80
_PAD_SCALES = {MINIFASNET_V2: 2.7, MINIFASNET_V1SE: 4.0}


@dataclass(frozen=True)
class YunetFace:
    """One YuNet detection in frame pixels."""

    box: FaceBox
    landmarks: np.ndarray  # 5 x 2
    score: float


@dataclass(frozen=True)
class PadScore:
    """MiniFASNet's live probability of one frame's main face (None: no face)."""

    live: float | None
    faces: int


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2 x 3 matrix of the least-squares similarity mapping ``src`` onto ``dst`` (Umeyama 1991)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (s**2).sum() / len(src)
    scale = float(np.trace(np.diag(sig) @ sign) / var_s) if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_112(bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The face warped onto the ArcFace 112 x 112 template."""
    m = similarity_transform(landmarks, ARCFACE_112)
    return cv2.warpAffine(bgr, m, (112, 112), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def pad_crop(bgr: np.ndarray, box: FaceBox, scale: float) -> np.ndarray:
    """MiniFASNet's input: the box made square, scaled around its centre, kept in the frame."""
    h, w = bgr.shape[:2]
    side = float(max(box.width, box.height, 1))
    scale = min((h - 1) / side, (w - 1) / side, scale)
    new = side * scale
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    x0, y0 = cx - new / 2, cy - new / 2
    x1, y1 = cx + new / 2, cy + new / 2
    # Shift the square inside the frame rather than cutting it (as the reference code does).
    if x0 < 0:
        x1 -= x0
        x0 = 0
    if y0 < 0:
        y1 -= y0
        y0 = 0
    if x1 > w - 1:
        x0 -= x1 - w + 1
        x1 = w - 1
    if y1 > h - 1:
        y0 -= y1 - h + 1
        y1 = h - 1
    crop = bgr[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1]
    return cv2.resize(crop, (_PAD_INPUT, _PAD_INPUT), interpolation=cv2.INTER_LINEAR)


def _gate_box(box: FaceBox) -> FaceBox:
    """The square the gates measure: YuNet's box is taller and narrower than the
    near-square boxes the gates' pixel sizes were set on (HOG's), so its mean side."""
    side = (box.width + box.height) / 2
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    return FaceBox(
        round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)
    )


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return np.asarray(e / e.sum())


class OnnxFaceModel:
    """YuNet + MobileFaceNet (+ MiniFASNet when liveness uses PAD), loaded after a hash check."""

    name = MODEL_NAME

    def __init__(self, settings: FaceSettings) -> None:
        self.settings = settings
        # PAD is loaded even where the site does not require it: a grant may ask for it,
        # and every verified frame then carries its live score (about 5 ms).
        files = verify_models(settings.resolved_models_dir(), RECOGNITION_FILES + PAD_FILES)
        cv2.setNumThreads(1)
        self._yunet = cv2.FaceDetectorYN.create(
            str(files[YUNET]), "", (320, 320), settings.detect_score, 0.3, 50
        )
        self._embed = cv2.dnn.readNetFromONNX(str(files[MOBILEFACENET]))
        self._pad = [
            (cv2.dnn.readNetFromONNX(str(files[name])), scale)
            for name, scale in _PAD_SCALES.items()
        ]
        self._input_size: tuple[int, int] | None = None
        self._sp68: Any = None
        self._dlib: Any = None

    # -- detection -----------------------------------------------------------------

    def yunet(self, bgr: np.ndarray, max_side: int | None = None) -> list[YunetFace]:
        """Every face YuNet finds on a copy scaled to ``max_side`` (default: the reference
        scale), in frame pixels, largest first."""
        h, w = bgr.shape[:2]
        f = min(1.0, (max_side or self.settings.detect_max_side) / max(h, w))
        small = bgr
        if f < 1.0:
            small = cv2.resize(bgr, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        size = (small.shape[1], small.shape[0])
        if size != self._input_size:
            self._yunet.setInputSize(size)
            self._input_size = size
        _, raw = self._yunet.detect(small)
        faces: list[YunetFace] = []
        for row in raw if raw is not None else ():
            x, y, bw, bh = (float(v) / f for v in row[:4])
            faces.append(
                YunetFace(
                    FaceBox(round(x), round(y), round(x + bw), round(y + bh)),
                    np.asarray(row[4:14], dtype=np.float64).reshape(5, 2) / f,
                    float(row[14]),
                )
            )
        faces.sort(key=lambda d: d.box.width * d.box.height, reverse=True)
        return faces

    def faces(self, bgr: np.ndarray) -> list[FaceBox]:
        """Face boxes, largest first (occupant counting, tests)."""
        return [d.box for d in self.yunet(bgr)]

    def _gated(
        self, bgr: np.ndarray, gates: QualityGates, max_side: int | None = None
    ) -> tuple[YunetFace | None, Detection, list[YunetFace]]:
        found = self.yunet(bgr, max_side)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        det = assess(rgb, [_gate_box(d.box) for d in found], gates)
        return (found[0] if det.usable else None), det, found

    def detect(self, bgr: np.ndarray, gates: QualityGates | None = None) -> Detection:
        """Detect and gate the main face of a BGR frame."""
        return self._gated(bgr, gates or self.settings.gates)[1]

    # -- embedding -------------------------------------------------------------------

    def embed(self, bgr: np.ndarray, face: YunetFace) -> np.ndarray:
        """L2-normalised 128-d MobileFaceNet embedding of an aligned face."""
        chip = align_112(bgr, face.landmarks)
        blob = cv2.dnn.blobFromImage(chip, 1 / 127.5, (112, 112), (127.5,) * 3, swapRB=True)
        self._embed.setInput(blob)
        vec = self._embed.forward().reshape(-1).astype(np.float64)
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec

    def encode_frame(
        self, bgr: np.ndarray, gates: QualityGates | None = None
    ) -> tuple[np.ndarray | None, Detection]:
        """Embedding of the gated main face, or None with the detection saying why."""
        face, det, _ = self._gated(bgr, gates or self.settings.gates)
        if face is None:
            return None, det
        return self.embed(bgr, face), det

    def encode_reference(self, image: bytes) -> bytes | Reason:
        """Template of the one face in a grant or card photo; the photo is not kept."""
        bgr = decode_image(image)
        if bgr is None:
            return Reason.BAD_IMAGE
        enc, det = self.encode_frame(prepare_reference(bgr), self.settings.reference_gates)
        if enc is None:
            return det.reason
        return template_to_bytes(enc, MODEL_NAME)

    def live_face(self, bgr: np.ndarray) -> bytes | Reason:
        """A JPEG crop of the gated main face of a live frame (sent with an electronic ID
        request, before any template is known), or why there is none."""
        face, det, _ = self._gated(bgr, self.settings.gates, self.settings.live_max_side)
        if face is None:
            return det.reason
        return face_crop_jpeg(bgr, face.box)

    def all_encodings(self, bgr: np.ndarray) -> list[np.ndarray]:
        """Embeddings of every face in the frame (occupant counting; no gates)."""
        return [self.embed(bgr, d) for d in self.yunet(bgr)]

    # -- verification ----------------------------------------------------------------

    def verify(self, bgr: np.ndarray, reference: bytes) -> VerifyResult:
        """Compare the main face of a live frame with a reference template (+ PAD score)."""
        start = time.perf_counter()
        threshold = self.settings.threshold

        def ms() -> float:
            return (time.perf_counter() - start) * 1000.0

        ref = reference_and_frame_check(reference, MODEL_NAME, bgr)
        if isinstance(ref, Reason):
            return VerifyResult.failed(ref, threshold, ms())
        face, det, _ = self._gated(bgr, self.settings.gates, self.settings.live_max_side)
        if face is None:
            return VerifyResult.failed(det.reason, threshold, ms())
        enc = self.embed(bgr, face)
        cosine = float(np.dot(enc, ref))
        dist = 1.0 - cosine
        live = self.pad_face(bgr, face.box)
        if cosine >= self.settings.replay_cosine:
            # The same picture as the grant's, not a camera's view of a person.
            return VerifyResult(
                False,
                Reason.REPLAYED_REFERENCE,
                threshold,
                distance=round(dist, 4),
                elapsed_ms=ms(),
                live_score=live,
            )
        accepted = dist <= threshold
        return VerifyResult(
            accepted=accepted,
            reason=Reason.MATCH if accepted else Reason.NO_MATCH,
            threshold=threshold,
            distance=round(dist, 4),
            face_jpeg=face_crop_jpeg(bgr, face.box),
            elapsed_ms=ms(),
            live_score=live,
        )

    # -- presentation-attack detection ----------------------------------------------

    def pad_face(self, bgr: np.ndarray, box: FaceBox) -> float:
        """Mean live probability of both MiniFASNet networks for one face box."""
        probs = []
        for net, scale in self._pad:
            crop = pad_crop(bgr, box, scale)
            net.setInput(cv2.dnn.blobFromImage(crop, 1.0, (_PAD_INPUT, _PAD_INPUT)))
            probs.append(float(_softmax(net.forward().reshape(-1))[1]))
        return round(sum(probs) / len(probs), 4)

    def pad(self, bgr: np.ndarray) -> PadScore:
        """Live score of the frame's largest face (detected as in a live frame)."""
        found = self.yunet(bgr, self.settings.live_max_side)
        if not found:
            return PadScore(None, 0)
        return PadScore(self.pad_face(bgr, found[0].box), len(found))

    def pad_burst(self, frames: Sequence[np.ndarray]) -> list[PadScore]:
        """PAD scores of a burst of frames."""
        return [self.pad(f) for f in frames]

    # -- blink (pad+blink): dlib's 68-point landmarks on YuNet's box -------------------

    def landmarks68(self, bgr: np.ndarray) -> np.ndarray | None:
        """68 (x, y) landmarks of the largest face, or None without a face."""
        if self._sp68 is None:
            import dlib  # deferred: only sites with the blink check pay for dlib

            path = self.settings.model_path("landmarks68")
            if not path.is_file():
                raise FileNotFoundError(f"face landmarks68 model not found: {path}")
            self._dlib = dlib
            self._sp68 = dlib.shape_predictor(str(path))
        found = self.yunet(bgr)
        if not found:
            return None
        # The 68-point model was trained on dlib's near-square boxes, not YuNet's tall ones.
        b = _gate_box(found[0].box)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        shape = self._sp68(rgb, self._dlib.rectangle(b.left, b.top, b.right, b.bottom))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

"""Face templates: the model's vector with the name of the model that made it.

Format: ``b"LGT1"``, one byte of name length, the model name (ASCII), then the
vector as little-endian float64. A 1,024-byte blob without the header is a
template from before models were named (dlib's 128 values). Templates of two
models never compare: a change of model re-encodes every guest.
"""

from __future__ import annotations

import cv2
import numpy as np

from agent.face.detect import FaceBox

_MAGIC = b"LGT1"
_DTYPE = np.dtype("<f8")
_LEGACY_DLIB_BYTES = 128 * 8
_DIM = 128
_CROP_MARGIN = 0.25
# Reference photos smaller than this (ID card photos are 102 x 126) are upscaled
# before detection; neither detector finds faces of a few dozen pixels reliably.
_REFERENCE_MIN_SIDE = 400


class BadTemplateError(ValueError):
    """Bytes that are not a face template of this format."""


def template_to_bytes(encoding: np.ndarray, model: str) -> bytes:
    """A 128-value vector and its model name as template bytes."""
    arr = np.asarray(encoding, dtype=_DTYPE).reshape(-1)
    if arr.shape != (_DIM,):
        raise BadTemplateError(f"face template must have {_DIM} values, got {arr.size}")
    name = model.encode("ascii")
    if not 0 < len(name) < 64:
        raise BadTemplateError("face template model name must be 1-63 ASCII characters")
    return _MAGIC + bytes([len(name)]) + name + arr.tobytes()


def parse_template(blob: bytes) -> tuple[str, np.ndarray]:
    """(model name, vector) of template bytes; raises BadTemplateError on bad input."""
    if blob.startswith(_MAGIC) and len(blob) > 5:
        n = blob[4]
        model = blob[5 : 5 + n]
        body = blob[5 + n :]
        if not model or not model.isascii():
            raise BadTemplateError("face template has no model name")
        name = model.decode("ascii")
    elif len(blob) == _LEGACY_DLIB_BYTES:
        name, body = "dlib", blob
    else:
        raise BadTemplateError(f"face template of {len(blob)} bytes is not a template")
    if len(body) != _DIM * 8:
        raise BadTemplateError(f"face template must hold {_DIM * 8} bytes, got {len(body)}")
    arr = np.frombuffer(body, dtype=_DTYPE).astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise BadTemplateError("face template holds non-finite values")
    return name, arr


def template_from_bytes(blob: bytes) -> np.ndarray:
    """The vector of template bytes (any model)."""
    return parse_template(blob)[1]


def template_model(blob: bytes) -> str | None:
    """The model that made a template, or None when the bytes are no template."""
    try:
        return parse_template(blob)[0]
    except BadTemplateError:
        return None


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two vectors (dlib's threshold is on it)."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def model_distance(model: str, a: np.ndarray, b: np.ndarray) -> float:
    """The distance a model's threshold is on: Euclidean for dlib, 1 - cosine otherwise."""
    if model == "dlib":
        return distance(a, b)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 2.0
    return 1.0 - float(np.dot(a, b)) / (na * nb)


def prepare_reference(bgr: np.ndarray) -> np.ndarray:
    """Small photos (a card's 102 x 126) upscaled so the detector finds the face."""
    h, w = bgr.shape[:2]
    if max(h, w) >= _REFERENCE_MIN_SIDE:
        return bgr
    f = _REFERENCE_MIN_SIDE / max(h, w)
    return cv2.resize(bgr, (round(w * f), round(h * f)), interpolation=cv2.INTER_CUBIC)


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

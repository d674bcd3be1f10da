"""Face verification settings: which model, its threshold, liveness, gates and model files."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agent.face.detect import QualityGates
from agent.face.modelfiles import default_models_dir

if TYPE_CHECKING:
    from agent.config.schema import FaceSection

FaceModelName = Literal["mobilefacenet", "dlib"]
LivenessMode = Literal["pad", "pad+blink", "blink", "off"]

DEFAULT_THRESHOLDS: dict[str, float] = {
    # 1 - cosine; measured with bench/face_threshold.py: the largest value whose FAR
    # is <= 0.1 % on deepface (Western) and nuaa/live (East-Asian) alike (docs/face.md).
    # The two sets allow 0.545; the 71-person East-Asian hold-out of ../shared/models/README.md
    # measured 0.31 % FAR at 0.55 and 0.05 % at 0.50, so the default stays at 0.50.
    "mobilefacenet": 0.5,
    # Euclidean distance of dlib descriptors: the largest value under 0.1 % FAR on both sets
    # (nuaa/live 0.415, deepface 0.53); the hold-out still measured 0.57 % at 0.40: dlib cannot
    # meet the target on East-Asian faces at a usable FRR.
    "dlib": 0.415,
}
DEFAULT_THRESHOLD = DEFAULT_THRESHOLDS["mobilefacenet"]

# Faces closer than this (Euclidean distance of the model's vectors) are one person
# when counting occupants. MobileFaceNet vectors are unit length: 1.1 is cosine 0.4.
SAME_PERSON: dict[str, float] = {"mobilefacenet": 1.1, "dlib": 0.55}

REPLAY_COSINE = 0.95
"""A live frame at least this similar to the reference is the reference photo replayed.

Measured (bench/face_threshold.py, docs/face.md): 100 real captures of a person
against their reference photo reach at most 0.938 cosine on deepface and nuaa
(live frames detected at ``live_max_side``); the reference photo itself shown
to the simulated camera and JPEG-compressed scores 0.80 or more, 61 % of them
at least 0.95. The bound sits above every real capture, so it refuses most
replays but not all of them: PAD stays the defence against pictures."""


def dlib_model_dir() -> Path:
    """Folder of the dlib models shipped in the face_recognition_models package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("package face_recognition_models is not installed")
    return Path(spec.origin).parent / "models"


@dataclass(frozen=True)
class FaceSettings:
    """Face verification configuration (model, threshold and liveness are site settings)."""

    model: FaceModelName = "mobilefacenet"
    threshold: float = -1.0
    """Accept when distance <= threshold; negative: the model's measured default."""
    models_dir: Path | None = None
    """Folder of the vendored ONNX files and their SHA256SUMS; None: the shipped ones."""
    recognition_model: Path | None = None
    """dlib only: any dlib ResNet model file; None: dlib_face_recognition_resnet_model_v1."""
    landmarks5_model: Path | None = None
    landmarks68_model: Path | None = None
    """Needed only for the blink check; see docs/face.md for its licence."""
    liveness: LivenessMode = "pad"
    pad_threshold: float = 0.5
    """A burst is live when the mean MiniFASNet live probability reaches this."""
    replay_cosine: float = REPLAY_COSINE
    detect_max_side: int = 640
    """Detection scale of reference photos and occupant frames (and of every dlib frame)."""
    live_max_side: int = 320
    """YuNet's scale for the door's live frames: faces there are at least ``min_face_px``
    (90) wide, still 45 px at half scale, and detection costs a quarter (docs/face.md)."""
    detect_score: float = 0.7
    """YuNet's smallest face score."""
    gates: QualityGates = field(default_factory=QualityGates)
    reference_gates: QualityGates = field(
        default_factory=lambda: QualityGates(min_face_px=60, min_sharpness=20.0)
    )

    def __post_init__(self) -> None:
        if self.model not in DEFAULT_THRESHOLDS:
            raise ValueError(f"face model must be 'mobilefacenet' or 'dlib', got {self.model!r}")
        if self.threshold < 0:
            object.__setattr__(self, "threshold", DEFAULT_THRESHOLDS[self.model])
        if not 0.0 < self.threshold < 2.0:
            raise ValueError(f"face threshold must be in (0, 2), got {self.threshold}")
        if self.liveness not in ("pad", "pad+blink", "blink", "off"):
            raise ValueError(
                f"face liveness must be 'pad', 'pad+blink', 'blink' or 'off', got {self.liveness!r}"
            )
        if self.liveness.startswith("pad") and self.model != "mobilefacenet":
            # MiniFASNet runs on YuNet's boxes; dlib's HOG boxes are not what it was measured on.
            raise ValueError("face liveness 'pad' needs model 'mobilefacenet'")
        if not 0.0 < self.pad_threshold < 1.0:
            raise ValueError(f"face pad_threshold must be in (0, 1), got {self.pad_threshold}")
        if self.live_max_side < 160:
            raise ValueError(f"face live_max_side must be >= 160, got {self.live_max_side}")
        if self.detect_max_side < 160:
            raise ValueError(f"face detect_max_side must be >= 160, got {self.detect_max_side}")

    @property
    def uses_pad(self) -> bool:
        return self.liveness.startswith("pad")

    @property
    def uses_blink(self) -> bool:
        return self.liveness in ("blink", "pad+blink")

    @property
    def same_person(self) -> float:
        return SAME_PERSON[self.model]

    def resolved_models_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else default_models_dir()

    def model_path(self, which: str) -> Path:
        """Resolved path of the dlib "recognition", "landmarks5" or "landmarks68" file."""
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
        return dlib_model_dir() / name

    def dlib_files(self) -> tuple[str, ...]:
        """The dlib files this configuration loads."""
        base = ("recognition", "landmarks5") if self.model == "dlib" else ()
        return base + (("landmarks68",) if self.uses_blink else ())


def settings_from_config(face: FaceSection) -> FaceSettings:
    """FaceSettings from the ``[face]`` section of the gateway configuration."""
    return FaceSettings(
        model=face.model,
        threshold=-1.0 if face.threshold is None else face.threshold,
        models_dir=face.models_dir,
        recognition_model=face.dlib_model,
        liveness=face.liveness,
        pad_threshold=face.pad_threshold,
        gates=QualityGates(min_face_px=face.min_face_px),
    )

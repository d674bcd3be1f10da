"""Face verification (人证合一): detection, quality gates, 1:1 matching, presentation-attack
detection, occupant counting and evaluation, behind one :class:`FaceModel` interface.
Inference runs in :class:`FaceWorker`'s child process, never on the daemon's loop.
"""

from agent.face.detect import Detection, FaceBox, QualityGates, Reason
from agent.face.liveness import BlinkDetector, LivenessDetector, LivenessOff, LivenessResult
from agent.face.loader import load_face_model
from agent.face.occupants import OccupantCount, OccupantCounter, watch_entry
from agent.face.settings import DEFAULT_THRESHOLD, DEFAULT_THRESHOLDS, FaceSettings
from agent.face.template import template_from_bytes, template_model, template_to_bytes
from agent.face.verify import DlibFaceModel, FaceModel, VerifyResult, settings_from_config
from agent.face.worker import FaceWorker, verify_attempts, verify_burst

__all__ = [
    "DEFAULT_THRESHOLD",
    "DEFAULT_THRESHOLDS",
    "BlinkDetector",
    "Detection",
    "DlibFaceModel",
    "FaceBox",
    "FaceModel",
    "FaceSettings",
    "FaceWorker",
    "LivenessDetector",
    "LivenessOff",
    "LivenessResult",
    "OccupantCount",
    "OccupantCounter",
    "QualityGates",
    "Reason",
    "VerifyResult",
    "load_face_model",
    "settings_from_config",
    "template_from_bytes",
    "template_model",
    "template_to_bytes",
    "verify_attempts",
    "verify_burst",
    "watch_entry",
]

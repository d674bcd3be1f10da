"""Face verification (人证合一): detection, quality gates, 1:1 matching, liveness,
occupant counting and evaluation. Inference runs in :class:`FaceWorker`'s child
process, never on the daemon's loop.
"""

from agent.face.detect import Detection, FaceBox, QualityGates, Reason
from agent.face.liveness import BlinkDetector, LivenessDetector, LivenessOff, LivenessResult
from agent.face.occupants import OccupantCount, OccupantCounter, watch_entry
from agent.face.verify import (
    DEFAULT_THRESHOLD,
    FaceEngine,
    FaceSettings,
    VerifyResult,
    settings_from_config,
    template_from_bytes,
    template_to_bytes,
)
from agent.face.worker import FaceWorker, verify_attempts

__all__ = [
    "DEFAULT_THRESHOLD",
    "BlinkDetector",
    "Detection",
    "FaceBox",
    "FaceEngine",
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
    "settings_from_config",
    "template_from_bytes",
    "template_to_bytes",
    "verify_attempts",
    "watch_entry",
]

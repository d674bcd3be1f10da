"""The configured face model, loaded behind the :class:`~agent.face.verify.FaceModel` interface."""

from __future__ import annotations

from agent.face.onnx import OnnxFaceModel
from agent.face.settings import FaceSettings
from agent.face.verify import DlibFaceModel, FaceModel


def load_face_model(settings: FaceSettings) -> FaceModel:
    """The configured model, its files checked (raises on a missing or changed file)."""
    if settings.model == "dlib":
        return DlibFaceModel(settings)
    return OnnxFaceModel(settings)

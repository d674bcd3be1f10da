"""Face checks that need no daemon: the model files are the shipped ones; liveness is on."""

from __future__ import annotations

from agent.config.schema import Config
from agent.doctor.report import FAIL, OK, WARN, Check


def check_face_models(config: Config) -> list[Check]:
    """The configured model's files verify against their SHA-256 (only with cameras)."""
    if not any(d.camera for d in config.doors):
        return []
    from agent.face.modelfiles import (
        PAD_FILES,
        RECOGNITION_FILES,
        ModelFileError,
        default_models_dir,
        verify_models,
    )

    face = config.face
    checks: list[Check] = []
    if face.model == "mobilefacenet":
        folder = face.models_dir or default_models_dir()
        names = RECOGNITION_FILES + PAD_FILES
        try:
            verify_models(folder, names)
        except ModelFileError as exc:
            checks.append(
                Check(
                    "face models",
                    FAIL,
                    str(exc),
                    "reinstall lockgw or restore the file from the release's models/ folder"
                    " (face.models_dir); never edit SHA256SUMS to match",
                )
            )
        else:
            checks.append(
                Check("face models", OK, f"{len(names)} files in {folder} match SHA256SUMS")
            )
    else:
        from agent.face.settings import FaceSettings

        path = FaceSettings(model="dlib", liveness="off", recognition_model=face.dlib_model)
        model = path.model_path("recognition")
        if model.is_file():
            checks.append(Check("face models", OK, f"dlib model {model}"))
        else:
            checks.append(Check("face models", FAIL, f"{model} is missing", "set face.dlib_model"))
    if face.liveness == "off":
        checks.append(
            Check(
                "face liveness",
                WARN,
                "liveness is off (allow_without_liveness = true): a printed photo of a guest"
                " matches their face",
                'set face.liveness = "pad"',
            )
        )
    elif face.liveness == "blink":
        checks.append(
            Check(
                "face liveness",
                WARN,
                "blink only: beaten by alternating a photo with a tilted copy",
                'set face.liveness = "pad" or "pad+blink"',
            )
        )
    else:
        checks.append(
            Check("face liveness", OK, f"{face.liveness} (threshold {face.pad_threshold})")
        )
    return checks

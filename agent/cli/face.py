"""``lockgw face eval DIR``: FAR/FRR of the configured model on a labelled photo folder."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent.cli.common import EXIT_FAILURE, EXIT_OK, UserError, load_config_or_fail, print_json

if TYPE_CHECKING:
    from agent.face.verify import FaceSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``face eval``."""
    face = subparsers.add_parser("face", help="face verification tools")
    face_sub = face.add_subparsers(dest="face_command", metavar="ACTION", required=True)
    p = face_sub.add_parser(
        "eval",
        help="FAR/FRR and equal error rate on a folder laid out as DIR/<person>/<images>",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="folder of <person>/<images>")
    p.add_argument("--threshold", type=float, help="distance threshold (default: configured)")
    p.add_argument("--model", type=Path, help="dlib ResNet recognition model file")
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="take threshold and model from this gateway configuration",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_eval)


def _settings(args: argparse.Namespace) -> FaceSettings:
    # dlib and OpenCV load only when a face command runs, not for `lockgw --help`.
    from agent.face.verify import FaceSettings

    settings = FaceSettings()
    if args.config is not None:
        face = load_config_or_fail(args.config).face
        settings = replace(settings, threshold=face.threshold, recognition_model=face.model)
    if args.threshold is not None:
        if not 0 < args.threshold < 2:
            raise UserError(f"--threshold must be between 0 and 2, got {args.threshold}")
        settings = replace(settings, threshold=args.threshold)
    if args.model is not None:
        settings = replace(settings, recognition_model=args.model)
    model = settings.model_path("recognition")
    if not model.is_file():
        raise UserError(f"face recognition model not found: {model}")
    return settings


def _cmd_eval(args: argparse.Namespace) -> int:
    from agent.face.evaluate import EvalInputError, evaluate, labelled_images
    from agent.face.verify import FaceEngine

    settings = _settings(args)
    try:
        people = labelled_images(args.dir)
    except EvalInputError as exc:
        raise UserError(str(exc)) from None
    try:
        engine = FaceEngine(settings)
    except RuntimeError as exc:  # dlib's error for a file that is not a model
        raise UserError(f"face model could not be loaded: {str(exc).splitlines()[0]}") from None
    report = evaluate(
        people,
        engine.encode_reference,
        threshold=settings.threshold,
        model=settings.model_path("recognition").name,
    )
    if args.json:
        print_json(report.as_dict())
    else:
        print(report.table())
    if not report.genuine or not report.impostor:
        print(
            "lockgw: no genuine or no impostor pairs: need two usable images of one person "
            "and usable images of two people",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK

"""``lockgw face eval DIR``: FAR/FRR (and APCER/BPCER) of the face model on a photo folder."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent.cli.common import EXIT_FAILURE, EXIT_OK, UserError, load_config_or_fail, print_json

if TYPE_CHECKING:
    from agent.face.settings import FaceSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``face eval``."""
    face = subparsers.add_parser("face", help="face verification tools")
    face_sub = face.add_subparsers(dest="face_command", metavar="ACTION", required=True)
    p = face_sub.add_parser(
        "eval",
        help="FAR/FRR (and APCER/BPCER with live/ + attack/) of the face model on a folder",
        description="DIR/<person>/<images>, or DIR/live/<person>/<images> with "
        "DIR/attack/<person>/<images> to measure presentation attacks too.",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="folder of <person>/<images>")
    p.add_argument("--threshold", type=float, help="distance threshold (default: configured)")
    p.add_argument(
        "--face-model",
        choices=("mobilefacenet", "dlib"),
        help="recognition model (default: configured, else mobilefacenet)",
    )
    p.add_argument("--model", type=Path, help="dlib only: ResNet recognition model file")
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="take model, threshold and liveness settings from this gateway configuration",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_eval)


def _settings(args: argparse.Namespace, with_pad: bool) -> FaceSettings:
    # OpenCV and dlib load only when a face command runs, not for `lockgw --help`.
    from agent.face.settings import FaceSettings, settings_from_config

    settings = FaceSettings(liveness="off")
    if args.config is not None:
        settings = settings_from_config(load_config_or_fail(args.config).face)
    if args.face_model is not None:
        settings = replace(settings, model=args.face_model, threshold=-1.0)
    if args.model is not None:
        settings = replace(settings, model="dlib", recognition_model=args.model, threshold=-1.0)
    if args.threshold is not None:
        if not 0 < args.threshold < 2:
            raise UserError(f"--threshold must be between 0 and 2, got {args.threshold}")
        settings = replace(settings, threshold=args.threshold)
    if with_pad and settings.model != "mobilefacenet":
        raise UserError("attack/ needs the mobilefacenet model: PAD runs on its face boxes")
    settings = replace(settings, liveness="pad" if with_pad else "off")
    if settings.model == "dlib":
        model = settings.model_path("recognition")
        if not model.is_file():
            raise UserError(f"face recognition model not found: {model}")
    return settings


def _cmd_eval(args: argparse.Namespace) -> int:
    from agent.face.evaluate import (
        EvalInputError,
        evaluate,
        evaluate_pad,
        labelled_images,
        split_layout,
    )
    from agent.face.loader import load_face_model
    from agent.face.modelfiles import ModelFileError
    from agent.face.verify import decode_image

    live_dir, attack_dir = split_layout(args.dir)
    settings = _settings(args, attack_dir is not None)
    try:
        people = labelled_images(live_dir)
        attacks = labelled_images(attack_dir) if attack_dir is not None else None
    except EvalInputError as exc:
        raise UserError(str(exc)) from None
    try:
        model = load_face_model(settings)
    except ModelFileError as exc:
        raise UserError(str(exc)) from None
    except RuntimeError as exc:  # dlib's error for a file that is not a model
        raise UserError(f"face model could not be loaded: {str(exc).splitlines()[0]}") from None
    report = evaluate(
        people,
        model.encode_reference,
        threshold=settings.threshold,
        model=settings.model
        if settings.model != "dlib"
        else f"dlib ({settings.model_path('recognition').name})",
    )
    if attacks is not None:
        pad = getattr(model, "pad", None)
        assert pad is not None

        def score(image: bytes) -> float | None:
            bgr = decode_image(image)
            return None if bgr is None else pad(bgr).live

        report.pad = evaluate_pad(people, attacks, score, threshold=settings.pad_threshold)
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

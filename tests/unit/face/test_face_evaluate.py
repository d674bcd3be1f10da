"""``lockgw face eval``: FAR/FRR/EER on labelled folders, and the pair arithmetic."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from agent.cli import face as face_cli
from agent.cli.common import UserError
from agent.face.evaluate import equal_error, labelled_images, pad_rates_at, rates_at
from agent.face.settings import DEFAULT_THRESHOLDS
from tests.support.face import KNN_TRAIN, deepface_layout, require_faces

EVAL_KEYS = {
    "model",
    "threshold",
    "far",
    "frr",
    "genuine_pairs",
    "impostor_pairs",
    "apcer",
    "bpcer",
    "attack_images",
    "live_images",
    "unusable",
}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``lockgw face ...`` through the subcommand's own parser, as main() would."""
    parser = argparse.ArgumentParser(prog="lockgw")
    face_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
    except UserError as exc:
        print(f"lockgw: {exc}", file=sys.stderr)
        code = 2
    out, err = capsys.readouterr()
    return code, out, err


def test_rates_and_equal_error() -> None:
    genuine = [0.2, 0.3, 0.4, 0.55]
    impostor = [0.5, 0.7, 0.8, 0.9]
    r = rates_at(genuine, impostor, 0.45)
    assert (r.far, r.frr) == (0.0, 0.25)
    r = rates_at(genuine, impostor, 0.6)
    assert (r.far, r.frr) == (0.25, 0.0)
    t, eer = equal_error(genuine, impostor)
    assert 0.4 <= t <= 0.55 and eer == pytest.approx(0.25)
    assert equal_error([0.1], [0.9])[1] == 0.0


def test_apcer_and_bpcer_arithmetic() -> None:
    """ISO/IEC 30107-3: APCER = attacks classified live; BPCER = live classified as attacks.
    A presentation without a face is never accepted: it counts against BPCER only."""
    r = pad_rates_at([0.9, 0.6, None, 0.3], [0.1, 0.55, None, 0.2], 0.5)
    assert (r.apcer, r.bpcer) == (0.25, 0.5)


def test_live_and_attack_layout(capsys: pytest.CaptureFixture[str]) -> None:
    """nuaa/: live webcam frames and printed-photo attacks of the same 8 East-Asian people."""
    nuaa = require_faces() / "nuaa"
    code, out, _ = run(["face", "eval", str(nuaa), "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert set(report) >= EVAL_KEYS
    assert report["model"] == "mobilefacenet"
    assert report["attack_images"] == 96 and report["live_images"] == 64
    assert report["apcer"] == 0.0  # no printed photo passes
    assert report["bpcer"] <= 0.05
    assert report["far"] <= 0.001  # East-Asian impostors at the default threshold
    assert report["genuine_pairs"] > 200 and report["impostor_pairs"] > 1500
    code, out, _ = run(["face", "eval", str(nuaa)], capsys)
    assert "APCER %" in out and "96 attack, 64 live images" in out


def test_deepface_at_default_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = deepface_layout(tmp_path / "deepface")
    assert not any(p.is_file() and not p.is_symlink() for p in root.rglob("*"))  # no copies
    code, out, _ = run(["face", "eval", str(root), "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert set(report) >= EVAL_KEYS and report["apcer"] is None and report["attack_images"] == 0
    assert report["people"] == 13 and report["images"] == 61
    # YuNet also finds the out-of-focus faces behind a few subjects: refused, not guessed.
    assert (
        set(report["unusable"]) <= {"multiple_faces"} and report["unusable"]["multiple_faces"] <= 4
    )
    assert report["genuine_pairs"] >= 125 and report["impostor_pairs"] >= 1500
    assert report["threshold"] == DEFAULT_THRESHOLDS["mobilefacenet"]
    assert report["far"] <= 0.001  # acceptance: FAR <= 0.1 % at the default threshold
    assert report["frr"] <= 0.05
    at = {r["threshold"]: r for r in report["rates"]}
    assert at[0.6]["far"] > report["far"]  # a laxer threshold lets impostors through here


def test_deepface_with_dlib(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = deepface_layout(tmp_path / "deepface")
    argv = ["face", "eval", str(root), "--face-model", "dlib", "--json"]
    code, out, _ = run(argv, capsys)
    assert code == 0
    report = json.loads(out)
    assert report["model"].startswith("dlib") and report["unusable"] == {}
    assert report["genuine_pairs"] == 140 and report["impostor_pairs"] == 1690
    assert report["threshold"] == DEFAULT_THRESHOLDS["dlib"] and report["far"] <= 0.001
    at = {r["threshold"]: r for r in report["rates"]}
    assert at[0.6]["far"] > report["far"]  # the library's 0.6 lets impostors through here
    assert 0.5 < report["eer_threshold"] < 0.7 and report["eer"] < 0.02


def test_any_labelled_folder_as_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    require_faces()
    code, out, _ = run(["face", "eval", str(KNN_TRAIN), "--threshold", "0.55"], capsys)
    assert code == 0
    assert "people: 5  images: 9" in out
    assert "genuine pairs: 4  impostor pairs: 32" in out
    assert "0.550" in out and "<- configured" in out and "equal error" in out


def test_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["face", "eval", str(tmp_path / "missing")], capsys)
    assert code == 2 and "not a folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(["face", "eval", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no <person>/<image> folders" in err
    code, _, err = run(["face", "eval", str(tmp_path), "--model", str(tmp_path / "m.dat")], capsys)
    assert code == 2 and "model not found" in err
    bad_model = tmp_path / "bad.dat"
    bad_model.write_bytes(b"not a dlib model")
    (tmp_path / "p1").mkdir()
    (tmp_path / "p1" / "a.jpg").write_bytes(b"x")
    code, _, err = run(["face", "eval", str(tmp_path), "--model", str(bad_model)], capsys)
    assert code == 2 and "could not be loaded" in err and "\n" not in err.strip()
    code, _, err = run(["face", "eval", str(tmp_path), "--threshold", "5"], capsys)
    assert code == 2 and "--threshold" in err
    (tmp_path / "live" / "p").mkdir(parents=True)
    (tmp_path / "attack" / "p").mkdir(parents=True)
    code, _, err = run(["face", "eval", str(tmp_path), "--face-model", "dlib"], capsys)
    assert code == 2 and "attack/ needs the mobilefacenet model" in err


def test_unusable_images_are_counted_and_no_pairs_is_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_faces()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "a" / "one.jpg").symlink_to(KNN_TRAIN / "obama" / "obama.jpg")
    assert list(labelled_images(tmp_path)) == ["a"]
    code, out, err = run(["face", "eval", str(tmp_path), "--json"], capsys)
    assert code == 1 and "no genuine or no impostor pairs" in err
    assert json.loads(out)["unusable"] == {"bad_image": 1}

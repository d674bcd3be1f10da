"""Default face thresholds from Western and East-Asian faces together, and the replay bound.

Run: ``.venv/bin/python bench/face_threshold.py`` (reads ../shared/faces; never copies it).

For each model (MobileFaceNet, dlib), every image of ``deepface/`` (Western,
labelled by identities.csv) and of ``nuaa/live/`` (East-Asian) is encoded the
way a grant photo is; all genuine and impostor pairs are scored per set. The
default threshold is the largest distance whose FAR is <= 0.1 % on BOTH sets.

Replay bound (MobileFaceNet): the cosine similarity of real captures of a person
against their reference photo (every genuine pair) versus the reference photo
itself shown to the simulated 480p camera and JPEG-compressed (a picture
injected into the stream). Prints readable lines, then ONE JSON line last.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.face import FaceSettings, Reason, load_face_model
from agent.face.evaluate import pair_distances
from agent.face.template import parse_template
from firmware_sim.camera import SimCamera

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
FAR_TARGET = 0.001


def deepface() -> dict[str, list[Path]]:
    people: dict[str, list[Path]] = {}
    with open(FACES / "deepface" / "identities.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            people.setdefault(row["person"], []).append(FACES / "deepface" / row["file"])
    return people


def nuaa_live() -> dict[str, list[Path]]:
    root = FACES / "nuaa" / "live"
    return {p.name: sorted(p.glob("*.jpg")) for p in sorted(root.iterdir()) if p.is_dir()}


def largest_threshold(impostor: list[float], target: float) -> float:
    """Largest t (to 0.005) with FAR(t) = share of impostors at distance <= t, within target."""
    arr = np.sort(np.asarray(impostor))
    allowed = int(np.floor(target * arr.size))  # impostors that may pass
    # Accepting distances strictly below the (allowed+1)-th smallest impostor distance.
    limit = float(arr[allowed]) if allowed < arr.size else float("inf")
    return float(np.floor((limit - 1e-9) / 0.005) * 0.005)


def rates(genuine: list[float], impostor: list[float], t: float) -> tuple[float, float]:
    g, i = np.asarray(genuine), np.asarray(impostor)
    return float(np.mean(i <= t)), float(np.mean(g > t))


def encode_all(model: object, people: dict[str, list[Path]]) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for person, paths in people.items():
        for p in paths:
            made = model.encode_reference(p.read_bytes())  # type: ignore[attr-defined]
            if not isinstance(made, Reason):
                out.setdefault(person, []).append(parse_template(made)[1])
    return out


def main() -> int:
    if not FACES.is_dir():
        print(f"face photos not found at {FACES}", file=sys.stderr)
        return 2
    sets = {"western": deepface(), "east_asian": nuaa_live()}
    figures: dict[str, object] = {"far_target": FAR_TARGET}
    for name in ("mobilefacenet", "dlib"):
        model = load_face_model(FaceSettings(model=name, liveness="off"))  # type: ignore[arg-type]
        limits = {}
        dists = {}
        for label, people in sets.items():
            g, i = pair_distances(encode_all(model, people), name)
            dists[label] = (g, i)
            limits[label] = largest_threshold(i, FAR_TARGET)
            print(
                f"{name} {label}: {len(g)} genuine, {len(i)} impostor pairs;"
                f" FAR <= 0.1 % up to {limits[label]:.3f}"
            )
        t = min(limits.values())
        figures[f"{name}_threshold"] = round(t, 3)
        for label, (g, i) in dists.items():
            far, frr = rates(g, i, t)
            figures[f"{name}_far_{label}"] = round(far, 5)
            figures[f"{name}_frr_{label}"] = round(frr, 5)
            figures[f"{name}_limit_{label}"] = round(limits[label], 3)
        print(f"{name}: default threshold {t:.3f}")

    # The replay bound, MobileFaceNet only.
    settings = FaceSettings(liveness="off", replay_cosine=1.01)
    model = load_face_model(settings)
    real: list[float] = []
    replayed: list[float] = []
    cam = SimCamera("480p")
    for people in sets.values():
        for paths in people.values():
            ref = model.encode_reference(paths[0].read_bytes())
            if isinstance(ref, Reason):
                continue
            for p in paths[1:]:
                frame = cv2.imread(str(p))
                r = model.verify(frame, ref)
                if r.distance is not None:
                    real.append(1 - r.distance)
            for quality in (95, 75, 50):
                cam.show(paths[0])
                frame = cam.read()
                assert frame is not None
                _ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
                r = model.verify(cv2.imdecode(buf, cv2.IMREAD_COLOR), ref)
                if r.distance is not None:
                    replayed.append(1 - r.distance)
    figures["real_capture_cosine_max"] = round(max(real), 4)
    figures["real_capture_cosine_p99"] = round(float(np.percentile(real, 99)), 4)
    figures["replayed_cosine_min"] = round(min(replayed), 4)
    figures["real_captures"] = len(real)
    figures["replays"] = len(replayed)
    bound = FaceSettings().replay_cosine
    figures["replay_cosine"] = bound
    figures["replays_refused"] = round(float(np.mean(np.asarray(replayed) >= bound)), 4)
    figures["real_refused"] = round(float(np.mean(np.asarray(real) >= bound)), 4)
    print(f"real captures vs reference: {len(real)}, max cosine {max(real):.4f}")
    print(f"reference replayed through the camera: {len(replayed)}, min cosine {min(replayed):.4f}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

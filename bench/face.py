"""Face benchmark: the default pipeline and dlib side by side, in one run.

Run: ``.venv/bin/python bench/face.py`` (reads ../shared/faces; never copies it).

- Latency: every deepface person's first photo is the grant reference; each of
  their other photos is shown to a simulated camera at 480p and verified
  through the worker process, timed at the caller (pipe transfer included).
  The default pipeline's figure is detect + align + embed + PAD (the worker
  scores every verified frame with both MiniFASNet networks); dlib's is detect
  + embed. ``speedup_vs_dlib`` is the ratio of the p95s.
- Memory: resident set of each worker after its runs.
- Recognition: FAR/FRR over all pairs of ``deepface/`` (Western) and
  ``nuaa/live/`` (East-Asian) at each model's default threshold, encoded in the
  worker the way grant photos are.
- Attempts: on ``nuaa/live``, each person's first frame is the reference; every
  run of 3 consecutive other frames is one attempt (admitted when any frame
  matches and the fused PAD score passes): ``frr_attempt_east_asian``.
- Presentation attacks: PAD on every ``nuaa/live`` and ``nuaa/attack`` image:
  APCER (attacks classified live) and BPCER (live classified as attacks).

Prints readable lines, then ONE JSON line of figures last.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import repo_path  # noqa: F401  (first: puts the checkout on sys.path)

from agent.face import FaceSettings, FaceWorker, Reason
from agent.face.evaluate import evaluate, evaluate_pad, labelled_images
from agent.face.verify import decode_image
from agent.face.worker import verify_burst
from firmware_sim.camera import SimCamera

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
DEEPFACE = FACES / "deepface"
NUAA = FACES / "nuaa"
ATTEMPT_FRAMES = 3


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def deepface_people() -> dict[str, list[Path]]:
    people: dict[str, list[Path]] = {}
    with open(DEEPFACE / "identities.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            people.setdefault(row["person"], []).append(DEEPFACE / row["file"])
    return people


def latency(worker: FaceWorker, people: dict[str, list[Path]], rounds: int) -> list[float]:
    cam = SimCamera("480p")
    times: list[float] = []
    for paths in people.values():
        ref = worker.encode_reference(paths[0].read_bytes(), timeout=30)
        if isinstance(ref, Reason):
            continue
        for live in paths[1:]:
            cam.show(live)
            frame = cam.read()
            assert frame is not None
            for _ in range(rounds):
                t0 = time.perf_counter()
                worker.verify(frame, ref, timeout=10)
                times.append((time.perf_counter() - t0) * 1000)
    return times


def attempts_frr(worker: FaceWorker, people: dict[str, list[Path]]) -> tuple[float, int]:
    """Share of 3-frame attempts of a live person that are refused (face or liveness)."""
    refused = total = 0
    for paths in people.values():
        ref = worker.encode_reference(paths[0].read_bytes(), timeout=30)
        if isinstance(ref, Reason):
            continue
        rest = paths[1:]
        for i in range(len(rest) - ATTEMPT_FRAMES + 1):
            cam = SimCamera("480p")
            cam.show_sequence(rest[i : i + ATTEMPT_FRAMES], loop=False)
            face, live = verify_burst(worker, cam.read, ref, attempts=ATTEMPT_FRAMES)
            total += 1
            if not face.accepted or (live is not None and not live.passed):
                refused += 1
    return (refused / total if total else float("nan")), total


def measure(settings: FaceSettings, rounds: int, label: str) -> dict[str, float]:
    figures: dict[str, float] = {}
    with FaceWorker(settings, timeout_s=30) as worker:
        t0 = time.perf_counter()
        assert worker.wait_ready(120), f"{label} worker did not start"
        figures["load_s"] = round(time.perf_counter() - t0, 2)
        worker.verify(np.zeros((480, 640, 3), np.uint8), b"\0" * 1024)  # warm-up
        times = latency(worker, deepface_people(), rounds)
        figures["verify_ms_p50_480p"] = round(percentile(times, 50), 1)
        figures["verify_ms_p95_480p"] = round(percentile(times, 95), 1)

        def encode(image: bytes) -> bytes | Reason:
            return worker.encode_reference(image, timeout=30)

        for population, people in (
            ("western", deepface_people()),
            ("east_asian", labelled_images(NUAA / "live")),
        ):
            report = evaluate(people, encode, threshold=settings.threshold, model=label)
            at = report.at_threshold
            figures[f"far_{population}"] = round(at.far, 5)
            figures[f"frr_{population}"] = round(at.frr, 5)
            figures[f"pairs_{population}"] = len(report.genuine) + len(report.impostor)
            print(f"{label} {population}:\n{report.table()}")
        if settings.uses_pad:
            frr, n = attempts_frr(worker, labelled_images(NUAA / "live"))
            figures["frr_attempt_east_asian"] = round(frr, 5)
            figures["attempts"] = n

            def score(image: bytes) -> float | None:
                bgr = decode_image(image)
                return None if bgr is None else worker.pad_score(bgr, timeout=30)

            pad = evaluate_pad(
                labelled_images(NUAA / "live"),
                labelled_images(NUAA / "attack"),
                score,
                threshold=settings.pad_threshold,
            )
            figures["apcer"] = round(pad.at_threshold.apcer, 5)
            figures["bpcer"] = round(pad.at_threshold.bpcer, 5)
            figures["attack_images"] = pad.attack_images
        figures["rss_mb"] = round(rss_mb(worker.pid), 1)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="verifications per frame")
    args = ap.parse_args()
    if not DEEPFACE.is_dir() or not NUAA.is_dir():
        print(f"face photos not found under {FACES}", file=sys.stderr)
        return 2
    new = FaceSettings()
    old = FaceSettings(model="dlib", liveness="off")
    onnx = measure(new, args.rounds, "mobilefacenet")
    dlib = measure(old, args.rounds, "dlib")
    figures = {
        "verify_ms_p95_480p": onnx["verify_ms_p95_480p"],
        "dlib_verify_ms_p95_480p": dlib["verify_ms_p95_480p"],
        "speedup_vs_dlib": round(dlib["verify_ms_p95_480p"] / onnx["verify_ms_p95_480p"], 2),
        "rss_mb": onnx["rss_mb"],
        "far_western": onnx["far_western"],
        "frr_western": onnx["frr_western"],
        "far_east_asian": onnx["far_east_asian"],
        "frr_east_asian": onnx["frr_east_asian"],
        "frr_attempt_east_asian": onnx["frr_attempt_east_asian"],
        "apcer": onnx["apcer"],
        "bpcer": onnx["bpcer"],
        "threshold": new.threshold,
        "pad_threshold": new.pad_threshold,
        "verify_ms_p50_480p": onnx["verify_ms_p50_480p"],
        "dlib_verify_ms_p50_480p": dlib["verify_ms_p50_480p"],
        "dlib_rss_mb": dlib["rss_mb"],
        "dlib_threshold": old.threshold,
        "dlib_far_western": dlib["far_western"],
        "dlib_frr_western": dlib["frr_western"],
        "dlib_far_east_asian": dlib["far_east_asian"],
        "dlib_frr_east_asian": dlib["frr_east_asian"],
        "attempts": onnx["attempts"],
        "attack_images": onnx["attack_images"],
        "load_s": onnx["load_s"],
        "dlib_load_s": dlib["load_s"],
        "rss_mb_parent": round(rss_mb(os.getpid()), 1),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Face verification benchmark: latency at 480p/720p, worker memory, FAR/FRR on deepface.

Run: ``.venv/bin/python bench/face.py`` (reads ../shared/faces; never copies it).
Every deepface person's first photo is the grant reference; each of their other
photos is shown to a simulated camera at 480p and at 720p and verified through
the worker process, timed at the caller (pipe transfer included). FAR/FRR come
from all pairs of the set at the configured threshold, encoded in the worker.
Prints a few readable lines, then ONE JSON line of figures last.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import repo_path  # noqa: F401  (first: puts the checkout on sys.path)

from agent.face import FaceSettings, FaceWorker, Reason
from agent.face.evaluate import evaluate, labelled_images
from firmware_sim.camera import SimCamera

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
DEEPFACE = FACES / "deepface"


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


def layout(dest: Path) -> dict[str, list[Path]]:
    with open(DEEPFACE / "identities.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            (dest / row["person"]).mkdir(parents=True, exist_ok=True)
            os.symlink(DEEPFACE / row["file"], dest / row["person"] / row["file"])
    return labelled_images(dest)


def latency(
    worker: FaceWorker, people: dict[str, list[Path]], size: str, rounds: int
) -> tuple[list[float], dict[str, int]]:
    cam = SimCamera(size)
    times: list[float] = []
    reasons: dict[str, int] = {}
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
                result = worker.verify(frame, ref, timeout=10)
                times.append((time.perf_counter() - t0) * 1000)
                reasons[result.reason.value] = reasons.get(result.reason.value, 0) + 1
    return times, reasons


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="verifications per frame and size")
    ap.add_argument("--threshold", type=float, default=None)
    args = ap.parse_args()
    if not DEEPFACE.is_dir():
        print(f"face photos not found at {DEEPFACE}", file=sys.stderr)
        return 2
    settings = FaceSettings() if args.threshold is None else FaceSettings(threshold=args.threshold)

    tmp = tempfile.TemporaryDirectory()  # symlinks only, removed at exit
    people = layout(Path(tmp.name))
    reference_photo = next(iter(people.values()))[0].read_bytes()
    with FaceWorker(settings, timeout_s=30) as worker:
        t0 = time.perf_counter()
        assert worker.wait_ready(120), "worker did not start"
        load_s = time.perf_counter() - t0
        rss_loaded = rss_mb(worker.pid)
        worker.verify(np.zeros((480, 640, 3), np.uint8), b"\0" * 1024)  # warm-up
        t480, r480 = latency(worker, people, "480p", args.rounds)
        t720, r720 = latency(worker, people, "720p", args.rounds)
        report = evaluate(
            people,
            lambda b: worker.encode_reference(b, timeout=30),
            threshold=settings.threshold,
            model=settings.model_path("recognition").name,
        )
        rss_worker = rss_mb(worker.pid)

    # Memory with blink liveness on (68-point model loaded) after a burst.
    with FaceWorker(FaceSettings(liveness="blink"), timeout_s=60) as blink_worker:
        assert blink_worker.wait_ready(120)
        cam = SimCamera("480p")
        cam.show(reference_photo)
        burst = [f for f in (cam.read() for _ in range(5)) if f is not None]
        blink_worker.liveness(burst)
        rss_blink = rss_mb(blink_worker.pid)
    tmp.cleanup()

    print(f"worker start + model load: {load_s:.2f} s, RSS {rss_loaded:.0f} MB loaded")
    print(f"480p: {len(t480)} verifications {r480}")
    print(f"720p: {len(t720)} verifications {r720}")
    print(report.table())
    at = report.at_threshold
    figures = {
        "verify_ms_p50_480p": round(statistics.median(t480), 1),
        "verify_ms_p95_480p": round(percentile(t480, 95), 1),
        "verify_ms_p50_720p": round(statistics.median(t720), 1),
        "verify_ms_p95_720p": round(percentile(t720, 95), 1),
        "rss_mb": round(rss_worker, 1),
        "rss_mb_blink": round(rss_blink, 1),
        "rss_mb_parent": round(rss_mb(os.getpid()), 1),
        "far": round(at.far, 5),
        "frr": round(at.frr, 5),
        "threshold": settings.threshold,
        "eer": round(report.eer, 5),
        "eer_threshold": report.eer_threshold,
        "genuine_pairs": len(report.genuine),
        "impostor_pairs": len(report.impostor),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

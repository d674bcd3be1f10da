"""Evaluate a recognition model, its threshold and presentation-attack detection on photos.

Layouts: ``DIR/<person>/<images>``, or ``DIR/live/<person>/<images>`` with
``DIR/attack/<person>/<images>``. Every live image is encoded the way a grant's
reference photo is; then every pair of two images of the same person is a
genuine pair and every pair of two different people an impostor pair. FRR is
the share of genuine pairs refused, FAR the share of impostor pairs accepted.

With ``attack/``, every image of both folders is also scored by the PAD
networks (ISO/IEC 30107-3 terms): APCER is the share of attack presentations
classified live, BPCER the share of live (bona fide) presentations classified
as attacks. An image in which no face is found is classified as an attack
(fail secure): it counts against BPCER, never against APCER.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.face.detect import Reason
from agent.face.template import model_distance, parse_template

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
DEFAULT_EXTRA_THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6)
DEFAULT_PAD_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


class EvalInputError(ValueError):
    """The folder is not usable for evaluation (named in the message)."""


def split_layout(root: Path) -> tuple[Path, Path | None]:
    """(live folder, attack folder or None): ``DIR/live`` + ``DIR/attack``, or plain ``DIR``."""
    if (root / "live").is_dir() and (root / "attack").is_dir():
        return root / "live", root / "attack"
    return root, None


def labelled_images(root: Path) -> dict[str, list[Path]]:
    """person -> image paths (sorted), from ``root/<person>/<images>``; symlinks followed."""
    if not root.is_dir():
        raise EvalInputError(f"not a folder: {root}")
    people: dict[str, list[Path]] = {}
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            people[person.name] = images
    if not people:
        raise EvalInputError(f"no <person>/<image> folders under {root}")
    return people


@dataclass(frozen=True)
class Rates:
    """FAR and FRR at one threshold."""

    threshold: float
    far: float
    frr: float


@dataclass
class EvalReport:
    """Pair counts, rates at thresholds and the equal error point."""

    model: str
    threshold: float
    people: int
    images: int
    unusable: dict[str, int]
    genuine: list[float] = field(repr=False)
    impostor: list[float] = field(repr=False)
    rates: list[Rates]
    eer_threshold: float
    eer: float
    pad: PadReport | None = None

    @property
    def at_threshold(self) -> Rates:
        return next(r for r in self.rates if r.threshold == self.threshold)

    def as_dict(self) -> dict[str, object]:
        at = self.at_threshold
        pad = self.pad
        return {
            "apcer": pad.at_threshold.apcer if pad else None,
            "bpcer": pad.at_threshold.bpcer if pad else None,
            "attack_images": pad.attack_images if pad else 0,
            "live_images": self.images,
            "pad_threshold": pad.threshold if pad else None,
            "pad_rates": [
                {"threshold": r.threshold, "apcer": r.apcer, "bpcer": r.bpcer} for r in pad.rates
            ]
            if pad
            else [],
            "model": self.model,
            "people": self.people,
            "images": self.images,
            "unusable": self.unusable,
            "genuine_pairs": len(self.genuine),
            "impostor_pairs": len(self.impostor),
            "threshold": self.threshold,
            "far": at.far,
            "frr": at.frr,
            "rates": [{"threshold": r.threshold, "far": r.far, "frr": r.frr} for r in self.rates],
            "eer_threshold": self.eer_threshold,
            "eer": self.eer,
        }

    def table(self) -> str:
        """Human-readable summary."""
        lines = [
            f"model: {self.model}",
            f"people: {self.people}  images: {self.images}  unusable: "
            + (", ".join(f"{k}={v}" for k, v in sorted(self.unusable.items())) or "none"),
            f"genuine pairs: {len(self.genuine)}  impostor pairs: {len(self.impostor)}",
            f"{'threshold':>9}  {'FAR %':>7}  {'FRR %':>7}",
        ]
        for r in self.rates:
            mark = "  <- configured" if r.threshold == self.threshold else ""
            lines.append(f"{r.threshold:>9.3f}  {r.far * 100:>7.2f}  {r.frr * 100:>7.2f}{mark}")
        lines.append(f"equal error: {self.eer * 100:.2f} % at threshold {self.eer_threshold:.3f}")
        if self.pad is not None:
            pad = self.pad
            lines += [
                f"presentation attacks: {pad.attack_images} attack, {pad.live_images} live images"
                f" (no face: {pad.attack_no_face} attack, {pad.live_no_face} live)",
                f"{'live >=':>9}  {'APCER %':>7}  {'BPCER %':>7}",
            ]
            for p in pad.rates:
                mark = "  <- configured" if p.threshold == pad.threshold else ""
                lines.append(
                    f"{p.threshold:>9.3f}  {p.apcer * 100:>7.2f}  {p.bpcer * 100:>7.2f}{mark}"
                )
        return "\n".join(lines)


@dataclass(frozen=True)
class PadRates:
    """APCER and BPCER at one live-score threshold."""

    threshold: float
    apcer: float
    bpcer: float


@dataclass
class PadReport:
    """Presentation-attack detection on ``live/`` and ``attack/`` images."""

    threshold: float
    live_scores: list[float | None] = field(repr=False)
    attack_scores: list[float | None] = field(repr=False)
    rates: list[PadRates]

    @property
    def live_images(self) -> int:
        return len(self.live_scores)

    @property
    def attack_images(self) -> int:
        return len(self.attack_scores)

    @property
    def live_no_face(self) -> int:
        return sum(s is None for s in self.live_scores)

    @property
    def attack_no_face(self) -> int:
        return sum(s is None for s in self.attack_scores)

    @property
    def at_threshold(self) -> PadRates:
        return next(r for r in self.rates if r.threshold == self.threshold)


def pad_rates_at(
    live: Sequence[float | None], attack: Sequence[float | None], threshold: float
) -> PadRates:
    """A presentation is classified live when its score is >= threshold (None: no face)."""
    apcer = sum(s is not None and s >= threshold for s in attack) / len(attack) if attack else 0.0
    bpcer = sum(s is None or s < threshold for s in live) / len(live) if live else 0.0
    return PadRates(round(threshold, 4), apcer, bpcer)


def evaluate_pad(
    live: dict[str, list[Path]],
    attack: dict[str, list[Path]],
    score: Callable[[bytes], float | None],
    *,
    threshold: float,
    thresholds: Iterable[float] = DEFAULT_PAD_THRESHOLDS,
) -> PadReport:
    """Score every live and attack image with ``score`` (image bytes -> live prob | None)."""
    live_scores = [score(p.read_bytes()) for paths in live.values() for p in paths]
    attack_scores = [score(p.read_bytes()) for paths in attack.values() for p in paths]
    all_t = sorted({round(t, 4) for t in (*thresholds, threshold)})
    return PadReport(
        round(threshold, 4),
        live_scores,
        attack_scores,
        [pad_rates_at(live_scores, attack_scores, t) for t in all_t],
    )


def pair_distances(
    templates: dict[str, list[np.ndarray]], model: str = "dlib"
) -> tuple[list[float], list[float]]:
    """(genuine, impostor) distances over all unordered pairs, in the model's metric."""
    genuine: list[float] = []
    impostor: list[float] = []
    for encs in templates.values():
        genuine.extend(model_distance(model, a, b) for a, b in itertools.combinations(encs, 2))
    for pa, pb in itertools.combinations(sorted(templates), 2):
        impostor.extend(model_distance(model, a, b) for a in templates[pa] for b in templates[pb])
    return genuine, impostor


def rates_at(genuine: Sequence[float], impostor: Sequence[float], threshold: float) -> Rates:
    """A pair is accepted when its distance is <= threshold (as in verification)."""
    g = np.asarray(genuine, dtype=np.float64)
    i = np.asarray(impostor, dtype=np.float64)
    frr = float(np.mean(g > threshold)) if g.size else 0.0
    far = float(np.mean(i <= threshold)) if i.size else 0.0
    return Rates(round(threshold, 4), far, frr)


def equal_error(genuine: Sequence[float], impostor: Sequence[float]) -> tuple[float, float]:
    """(threshold, rate) where FAR and FRR are closest, scanning every observed distance."""
    candidates = sorted(set(genuine) | set(impostor))
    if not candidates:
        return 0.0, 0.0
    best = (float("inf"), 0.0, 0.0)
    for t in candidates:
        r = rates_at(genuine, impostor, t)
        gap = abs(r.far - r.frr)
        if gap < best[0]:
            best = (gap, t, (r.far + r.frr) / 2)
    return round(best[1], 4), best[2]


def evaluate(
    people: dict[str, list[Path]],
    encode: Callable[[bytes], bytes | Reason],
    *,
    threshold: float,
    model: str,
    thresholds: Iterable[float] = DEFAULT_EXTRA_THRESHOLDS,
) -> EvalReport:
    """Encode every image with ``encode`` (image bytes -> template | reason) and score pairs."""
    templates: dict[str, list[np.ndarray]] = {}
    unusable: dict[str, int] = {}
    images = 0
    made_by = "dlib"
    for person, paths in people.items():
        for path in paths:
            images += 1
            result = encode(path.read_bytes())
            if isinstance(result, Reason):
                unusable[result.value] = unusable.get(result.value, 0) + 1
                continue
            made_by, vector = parse_template(result)
            templates.setdefault(person, []).append(vector)
    genuine, impostor = pair_distances(templates, made_by)
    all_t = sorted({round(t, 4) for t in (*thresholds, threshold)})
    rates = [rates_at(genuine, impostor, t) for t in all_t]
    eer_t, eer = equal_error(genuine, impostor)
    return EvalReport(
        model=model,
        threshold=round(threshold, 4),
        people=len(people),
        images=images,
        unusable=unusable,
        genuine=genuine,
        impostor=impostor,
        rates=rates,
        eer_threshold=eer_t,
        eer=eer,
    )

"""Evaluate a recognition model and threshold on a labelled folder of photos.

Layout: ``DIR/<person>/<images>``. Every image is encoded the way a grant's
reference photo is; then every pair of two images of the same person is a
genuine pair and every pair of two different people an impostor pair. FRR is
the share of genuine pairs refused, FAR the share of impostor pairs accepted.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.face.detect import Reason
from agent.face.verify import distance, template_from_bytes

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
DEFAULT_EXTRA_THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6)


class EvalInputError(ValueError):
    """The folder is not usable for evaluation (named in the message)."""


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

    @property
    def at_threshold(self) -> Rates:
        return next(r for r in self.rates if r.threshold == self.threshold)

    def as_dict(self) -> dict[str, object]:
        at = self.at_threshold
        return {
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
        return "\n".join(lines)


def pair_distances(
    templates: dict[str, list[np.ndarray]],
) -> tuple[list[float], list[float]]:
    """(genuine, impostor) distances over all unordered pairs."""
    genuine: list[float] = []
    impostor: list[float] = []
    for encs in templates.values():
        genuine.extend(distance(a, b) for a, b in itertools.combinations(encs, 2))
    for pa, pb in itertools.combinations(sorted(templates), 2):
        impostor.extend(distance(a, b) for a in templates[pa] for b in templates[pb])
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
    for person, paths in people.items():
        for path in paths:
            images += 1
            result = encode(path.read_bytes())
            if isinstance(result, Reason):
                unusable[result.value] = unusable.get(result.value, 0) + 1
                continue
            templates.setdefault(person, []).append(template_from_bytes(result))
    genuine, impostor = pair_distances(templates)
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

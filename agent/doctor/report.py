"""The doctor's report: a :class:`Check` per line, statuses, counts and the summary."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

OK = "OK"
FAIL = "FAIL"
SKIP = "SKIP"
WARN = "WARN"
"""Works, but weaker than it should be: the exit code stays 0."""


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: str  # OK, FAIL, WARN or SKIP
    detail: str
    fix: str = ""


@dataclass
class Report:
    """Every check in order; the exit code follows the README (0, 1, or 2 for the config)."""

    checks: list[Check] = field(default_factory=list)
    config_ok: bool = True

    @property
    def exit_code(self) -> int:
        if not self.config_ok:
            return 2
        return 1 if any(c.status == FAIL for c in self.checks) else 0

    def counts(self) -> dict[str, int]:
        """How many checks ended OK, FAIL and SKIP."""
        return {
            s: sum(c.status == s for c in self.checks)
            for s in (OK, FAIL, WARN, SKIP)
            if s != WARN or any(c.status == WARN for c in self.checks)
        }

    def as_dict(self) -> dict[str, Any]:
        """The report for ``--json``."""
        return {
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "checks": [asdict(c) for c in self.checks],
        }


def summary_line(checks: Iterable[Check]) -> str:
    """``17 OK, 1 FAIL, 2 SKIP``."""
    items = list(checks)
    counts = {s: sum(c.status == s for c in items) for s in (OK, FAIL, WARN, SKIP)}
    if not counts[WARN]:
        del counts[WARN]
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def format_age(seconds: float) -> str:
    """``90`` -> ``90 s``, ``5400`` -> ``90 min``, then hours and days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"

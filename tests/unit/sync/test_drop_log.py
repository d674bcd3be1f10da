"""A flood of forged payloads is counted per reason and logged in a few summary lines."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.sync.commands import DropLog
from tests.unit.sync.test_commands import Rig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_forged_commands_writes_one_line_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path)
    clock = Clock()
    rig.proc.drop_log = DropLog(interval_s=60.0, clock=clock)
    forged = [b"not a JWE at all", b"eyJ.eyJ.eyJ.eyJ.eyJ"]
    with caplog.at_level(logging.WARNING, logger="agent.sync.commands"):
        for i in range(3000):
            clock.now = i * 0.05  # 3,000 in 150 s
            outcome = rig.proc.handle(forged[i % 2])
            assert outcome.status == "dropped"
        clock.now = 1000.0
        rig.proc.prune()  # the periodic job writes what is still pending
    lines = [r for r in caplog.records if r.name == "agent.sync.commands"]
    assert 2 <= len(lines) <= 5, [r.getMessage() for r in lines]
    summaries = [getattr(r, "counts", {}) for r in lines[1:]]
    logged = 1 + sum(sum(c.values()) for c in summaries)
    assert logged == 3000  # every drop is in a line's count, none is lost
    dropped = {k: v for k, v in rig.proc.counters.items() if k.startswith("dropped_")}
    assert sum(dropped.values()) == 3000
    assert rig.outbox.stats().depth == 0  # nothing answered
    rig.store.close()

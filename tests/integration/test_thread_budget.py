"""Bounded door work under a real task limit: a pids cgroup as systemd's TasksMax makes one.

50 doors get an opening each at the same moment, in a process placed in a cgroup
(v1 ``pids`` controller) whose ``pids.max`` is the budget agent/runtime/sizing.py
computes, and then one where not a single new thread can start: every opening is
recorded and carried out either way (with no thread to spare, on the loop itself).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime.sizing import LARGEST, thread_budget
from tests.integration.test_unlock_intents import REPO, Doors

PIDS = Path("/sys/fs/cgroup/pids")


@pytest.fixture
def cgroup() -> Iterator[Path]:
    group = PIDS / f"lockgw-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a pids cgroup here ({exc}); needs root and cgroup v1 pids")
    try:
        yield group
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            (PIDS / "cgroup.procs").write_text(pid)
        group.rmdir()


def run_in(cgroup: Path, doors: Doors, limit: str) -> tuple[int, int]:
    """Open 50 doors at once with ``pids.max`` = ``limit`` ("budget" or "none");
    (pids.max used, threads at the end)."""
    proc = subprocess.Popen(
        doors.cmd("--doors", "50"),
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    budget = int(proc.stdout.readline().split()[1])
    (cgroup / "cgroup.procs").write_text(str(proc.pid))
    current = int((cgroup / "pids.current").read_text())
    cap = budget if limit == "budget" else current
    (cgroup / "pids.max").write_text(str(cap))
    out, err = proc.communicate("go\n", timeout=120)
    assert proc.returncode == 0, err[-3000:]
    # with no thread to spare, the work ran on the loop (and said so)
    assert ("no worker thread" in err) == (limit == "none")
    assert (
        int((cgroup / "pids.peak").read_text()) <= cap if (cgroup / "pids.peak").exists() else True
    )
    return cap, int(out.split()[-1])


@pytest.mark.parametrize("limit", ["budget", "none"])
def test_fifty_doors_at_once_are_all_recorded_and_opened(
    tmp_path: Path, cgroup: Path, limit: str
) -> None:
    doors = Doors(tmp_path)
    cap, threads = run_in(cgroup, doors, limit)
    assert threads <= cap
    openings, happened, answered = doors.check()
    assert (openings, happened, answered) == (50, 50, 0)
    assert sorted(set(doors.witness.read_text().split())) == sorted(f"door-{n}" for n in range(50))


def test_the_unit_allows_the_largest_building() -> None:
    unit = (REPO / "systemd" / "lockgw.service").read_text()
    [line] = [x for x in unit.splitlines() if x.startswith("TasksMax=")]
    assert int(line.split("=")[1]) >= thread_budget(**LARGEST).tasks_max
    assert os.cpu_count()  # the budget of this machine is within it too
    assert thread_budget(50, 50, 4, 50).tasks_max <= int(line.split("=")[1])

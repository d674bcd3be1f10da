"""The soak (bench/soak.py) as a slow test: 16 locks, cards every few seconds, the face
worker kept busy; no false lock_offline, nothing lost, nothing duplicated.

Minutes from ``LOCKGW_SOAK_MINUTES`` (default 30, the acceptance length).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_soak_16_locks() -> None:
    minutes = os.environ.get("LOCKGW_SOAK_MINUTES", "30")
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "soak.py"), "--minutes", minutes],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["presentations"] > 0
    assert (figures["false_offline"], figures["lost"], figures["duplicates"]) == (0, 0, 0)

"""Waiting for a condition in the simulators' drivers, tests and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], bool], timeout: float = 15.0, interval: float = 0.02
) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass; the last answer is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()

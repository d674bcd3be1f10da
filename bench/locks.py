"""Benchmark the OSDP driver against simulated locks on a pseudo-terminal bus.

- unlock latency: from ``OsdpBus.unlock()`` to the simulated relay switching,
  16 locks at 115200 baud (target: p99 <= 100 ms);
- poll cycle: the median time between two polls of the same lock, with 16
  and with 64 locks on the bus.

Usage: ``.venv/bin/python bench/locks.py [--samples N]``. Prints progress, then
one JSON line of figures last.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import repo_path  # noqa: F401  (first: puts the checkout on sys.path)

from drivers.osdp import LockSpec, OsdpBus
from drivers.osdp.frames import CMD_POLL, FrameScanner
from firmware_sim.locks import SimBus

KEY = bytes(range(16))
BAUD = 115200


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def start(tmp: Path, n: int) -> tuple[SimBus, OsdpBus, dict[int, list[float]]]:
    sim = SimBus(tmp / f"tty{n}", baudrate=BAUD)
    for a in range(1, n + 1):
        sim.add_lock(a, KEY)
    polls: dict[int, list[float]] = {a: [] for a in range(1, n + 1)}
    scanner = FrameScanner()
    mutex = threading.Lock()

    def tap(direction: str, data: bytes) -> None:
        if direction != "cp":
            return
        now = time.monotonic()
        with mutex:
            for frame in scanner.feed(data):
                if not frame.is_reply and frame.code == CMD_POLL and frame.address in polls:
                    polls[frame.address].append(now)

    sim.tap = tap
    sim.start()
    bus = OsdpBus(str(sim.link), BAUD, [LockSpec(a, KEY) for a in range(1, n + 1)], lambda e: None)
    bus.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(s.online for s in bus.snapshot()):
        time.sleep(0.05)
    online = sum(s.online for s in bus.snapshot())
    if online != n:
        raise SystemExit(f"only {online} of {n} locks came online")
    return sim, bus, polls


def poll_cycle(polls: dict[int, list[float]], since: float) -> float:
    gaps: list[float] = []
    for times in polls.values():
        recent = [t for t in times if t >= since]
        gaps += [b - a for a, b in itertools.pairwise(recent)]
    return statistics.median(gaps) * 1000 if gaps else float("nan")


def measure_polls(tmp: Path, n: int, seconds: float) -> float:
    sim, bus, polls = start(tmp, n)
    try:
        since = time.monotonic()
        time.sleep(seconds)
        return poll_cycle(polls, since)
    finally:
        bus.stop()
        sim.stop()


def measure_unlocks(tmp: Path, samples: int) -> tuple[list[float], float]:
    sim, bus, polls = start(tmp, 16)
    rng = random.Random(4)
    latencies: list[float] = []
    try:
        since = time.monotonic()
        for _ in range(samples):
            address = rng.randint(1, 16)
            lock = sim.locks[address]
            lock.wait_relay(False, 5)
            seen = len(lock.record.relay_changes)
            time.sleep(rng.uniform(0.0, 0.05))  # land anywhere in the poll cycle
            t0 = time.monotonic()
            bus.unlock(address, 0.1)
            deadline = t0 + 5
            while len(lock.record.relay_changes) <= seen and time.monotonic() < deadline:
                time.sleep(0.0005)
            if len(lock.record.relay_changes) <= seen:
                raise SystemExit(f"lock {address} did not unlock within 5 s")
            latencies.append((lock.record.relay_changes[seen].at - t0) * 1000)
        cycle = poll_cycle(polls, since)
    finally:
        bus.stop()
        sim.stop()
    return latencies, cycle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=300, help="unlocks to time (300)")
    parser.add_argument("--poll-seconds", type=float, default=5.0, help="poll sampling time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        latencies, _ = measure_unlocks(tmp, args.samples)
        print(f"unlock latency over {len(latencies)} unlocks, 16 locks at {BAUD} baud", flush=True)
        cycle16 = measure_polls(tmp, 16, args.poll_seconds)
        print(f"poll cycle with 16 locks: {cycle16:.1f} ms", flush=True)
        cycle64 = measure_polls(tmp, 64, args.poll_seconds)
        print(f"poll cycle with 64 locks: {cycle64:.1f} ms", flush=True)
    figures = {
        "unlock_latency_p50_ms": round(percentile(latencies, 0.50), 1),
        "unlock_latency_p99_ms": round(percentile(latencies, 0.99), 1),
        "poll_cycle_ms_16": round(cycle16, 1),
        "poll_cycle_ms_64": round(cycle64, 1),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

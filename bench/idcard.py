"""Benchmark: card presented -> fields decoded, against the simulator at 115200 baud.

Prints progress lines, then ONE JSON line last:
``read_ms_p50`` / ``read_ms_p99``: from ``present()`` to the decoded CardRead
(includes waiting for the next find poll); ``find_to_decoded_ms_*``: from the
successful find to the decoded fields (select + read on the wire + decode);
``wire_ms_read_reply``: the read reply's own wire time at this baud.

    .venv/bin/python bench/idcard.py [--n 50] [--poll-ms 200] [--baud 115200]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time

import repo_path  # noqa: F401  (first: puts the checkout on sys.path)

from drivers.idcard.reader import CardRead, IdCardReader
from firmware_sim.idcards import sample_card
from firmware_sim.idreader import IdReaderSimulator


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="presentations (default 50)")
    parser.add_argument("--poll-ms", type=int, default=200, help="find poll period (default 200)")
    parser.add_argument("--baud", type=int, default=115200)
    args = parser.parse_args()

    got = threading.Event()
    reads: list[tuple[float, CardRead]] = []

    def on_card(read: CardRead) -> None:
        reads.append((time.perf_counter(), read))
        got.set()

    rng = random.Random(1)
    total: list[float] = []
    find_to_decoded: list[float] = []
    with IdReaderSimulator(baud=args.baud) as sim:
        reader = IdCardReader(sim.port_path, on_card, poll_interval=args.poll_ms / 1000)
        reader.start()
        try:
            time.sleep(0.5)
            for i in range(args.n):
                card = sample_card()
                # Present at a random phase of the poll cycle, like a person would.
                time.sleep(rng.uniform(0, args.poll_ms / 1000))
                got.clear()
                t0 = time.perf_counter()
                sim.present(card)
                if not got.wait(10):
                    print(f"presentation {i}: no read within 10 s", file=sys.stderr)
                    return 1
                t1, read = reads[-1]
                total.append((t1 - t0) * 1000)
                find_to_decoded.append(read.read_ms)
                sim.remove()
                finds = sim.commands["find"]
                while sim.commands["find"] < finds + 3:
                    time.sleep(0.01)
                if (i + 1) % 10 == 0:
                    print(f"{i + 1}/{args.n} presentations", flush=True)
        finally:
            reader.stop()
        stats = reader.stats
    wire_ms = 1295 * 10 / args.baud * 1000
    result = {
        "read_ms_p50": round(statistics.median(total), 1),
        "read_ms_p99": round(percentile(total, 99), 1),
        "find_to_decoded_ms_p50": round(statistics.median(find_to_decoded), 1),
        "find_to_decoded_ms_p99": round(percentile(find_to_decoded, 99), 1),
        "wire_ms_read_reply": round(wire_ms, 1),
        "poll_ms": args.poll_ms,
        "baud": args.baud,
        "n": args.n,
        "bad_frames": stats.bad_frames,
        "timeouts": stats.timeouts,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

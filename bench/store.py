"""Store throughput: durable single commits per second, and rows per second when batched.

Prints one JSON line last: {"commit_per_s": …, "batched_rows_per_s": …}.
Runs against a database in a temporary directory on the same disk as the state
directory would be (override with LOCKGW_BENCH_DIR).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from agent.state.store import Store

SINGLE_COMMITS = 400
BATCH_ROWS = 20_000
BATCH_SIZE = 500
ROUNDS = 5


def _single_commits(store: Store, start: int) -> float:
    began = time.perf_counter()
    for i in range(start, start + SINGLE_COMMITS):
        with store.write() as conn:
            conn.execute("INSERT INTO bench (n, payload) VALUES (?, ?)", (i, "x" * 200))
    return SINGLE_COMMITS / (time.perf_counter() - began)


def _batched(store: Store, start: int) -> float:
    began = time.perf_counter()
    for offset in range(0, BATCH_ROWS, BATCH_SIZE):
        with store.write() as conn:
            conn.executemany(
                "INSERT INTO bench (n, payload) VALUES (?, ?)",
                ((start + offset + j, "x" * 200) for j in range(BATCH_SIZE)),
            )
    return BATCH_ROWS / (time.perf_counter() - began)


def main() -> None:
    base = os.environ.get("LOCKGW_BENCH_DIR")
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        store = Store.open(Path(tmp) / "lockgw.db")
        with store.write() as conn:
            conn.execute("CREATE TABLE bench (n INTEGER PRIMARY KEY, payload TEXT)")
        commits, batched = [], []
        n = 0
        for _ in range(ROUNDS):
            commits.append(_single_commits(store, n))
            n += SINGLE_COMMITS
            batched.append(_batched(store, n))
            n += BATCH_ROWS
        store.close()
    print(
        json.dumps(
            {
                "commit_per_s": round(statistics.median(commits), 1),
                "batched_rows_per_s": round(statistics.median(batched), 1),
            }
        )
    )


if __name__ == "__main__":
    main()

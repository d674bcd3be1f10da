"""The store: migrations, durability under kill -9, corrupt databases moved aside."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.state.migrations import MIGRATIONS, Migration
from agent.state.store import Store, StoreError, read_summary

EXTRA = Migration(len(MIGRATIONS) + 1, "test_extra", "CREATE TABLE extra (x INTEGER);")


def test_fresh_database_is_at_newest_version_with_wal_and_full_sync(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db" / "lockgw.db")
    try:
        assert store.schema_version() == len(MIGRATIONS)
        with store.read() as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()


@pytest.mark.parametrize("start_version", range(len(MIGRATIONS) + 1))
def test_migrates_from_every_earlier_version_keeping_data(
    tmp_path: Path, start_version: int
) -> None:
    path = tmp_path / "lockgw.db"
    old = Store.open(path, MIGRATIONS[:start_version])
    assert old.schema_version() == start_version
    if start_version >= 1:
        with old.write() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('kept', 'yes')")
    old.close()

    new = Store.open(path, [*MIGRATIONS, EXTRA])
    try:
        assert new.schema_version() == len(MIGRATIONS) + 1
        with new.read() as conn:
            conn.execute("SELECT x FROM extra").fetchall()
            if start_version >= 1:
                assert conn.execute("SELECT value FROM meta WHERE key='kept'").fetchone() == (
                    "yes",
                )
    finally:
        new.close()


def test_refuses_a_database_from_a_newer_lockgw(tmp_path: Path) -> None:
    path = tmp_path / "lockgw.db"
    Store.open(path, [*MIGRATIONS, EXTRA]).close()
    with pytest.raises(StoreError, match="newer than this lockgw knows"):
        Store.open(path)


def test_failed_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "lockgw.db"
    Store.open(path).close()
    broken = Migration(len(MIGRATIONS) + 1, "broken", "CREATE TABLE ok (a);\nNOT SQL AT ALL;")
    with pytest.raises(sqlite3.OperationalError):
        Store.open(path, [*MIGRATIONS, broken])
    assert read_summary(path).schema_version == len(MIGRATIONS)
    assert "ok" not in read_summary(path).tables


def test_failed_write_rolls_back(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "lockgw.db")
    try:
        with pytest.raises(RuntimeError), store.write() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('a', 'b')")
            raise RuntimeError("boom")
        assert store.table_counts()["meta"] == 0
    finally:
        store.close()


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "flipped_page"],
)
def test_corrupt_database_is_moved_aside_and_recorded(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "lockgw.db"
    store = Store.open(path)
    with store.write() as conn:
        conn.execute("CREATE TABLE filler (x TEXT)")
        for i in range(2000):
            conn.execute("INSERT INTO filler VALUES (?)", (f"row {i} " * 8,))
    store.close()
    original = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        path.write_bytes(original[: len(original) // 3])
    else:
        data = bytearray(original)
        for offset in range(4096 * 3, 4096 * 3 + 200):
            data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
    damaged = path.read_bytes()

    recovered = Store.open(path)
    try:
        assert recovered.recovery is not None
        moved = recovered.recovery.moved_to
        assert moved.exists() and moved.read_bytes() == damaged, "evidence must be kept as it was"
        with recovered.read() as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            kinds = [r[0] for r in conn.execute("SELECT kind FROM incidents WHERE reported = 0")]
        assert kinds == ["store_recovered"]
    finally:
        recovered.close()


_WRITER = r"""
import sys
from pathlib import Path
from agent.state.store import Store
store = Store.open(Path(sys.argv[1]))
with store.read() as conn:
    start = conn.execute("SELECT coalesce(max(CAST(key AS INTEGER)), 0) FROM meta").fetchone()[0]
i = start
while True:
    i += 1
    with store.write() as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (str(i), "x" * (i % 300)))
    sys.stdout.write(f"{i}\n")
    sys.stdout.flush()
"""


def test_kill_9_during_writes_loses_no_committed_row(tmp_path: Path) -> None:
    path = tmp_path / "lockgw.db"
    Store.open(path).close()
    rng = random.Random(20261122)
    acknowledged: set[int] = set()
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # writing has started
        assert first.strip().isdigit()
        acknowledged.add(int(first))
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        acknowledged.update(int(line) for line in rest.split() if line.isdigit())

        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {int(r[0]) for r in conn.execute("SELECT key FROM meta")}
        finally:
            conn.close()
        missing = acknowledged - stored
        assert not missing, f"{len(missing)} committed rows lost"
    assert len(acknowledged) > 20
    reopened = Store.open(path)
    assert reopened.recovery is None
    reopened.close()

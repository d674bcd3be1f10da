"""``seq`` never repeats, even when the database is lost or an old copy comes back."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from agent.contract.keys import load_gateway_keys, load_platform_keys
from agent.state.seqfloor import BLOCK, SeqReservation
from agent.state.store import Store
from agent.sync.outbox import Outbox
from tests.conftest import make_key_files

EVENT = ("door.state", {"lock": "L1", "state": "closed", "at": "2026-11-22T10:00:00.000Z"})


@pytest.fixture
def open_outbox(tmp_path: Path):  # type: ignore[no-untyped-def]
    make_key_files(tmp_path / "keys")
    gw = load_gateway_keys(tmp_path / "keys" / "gateway.jwks")
    pf = load_platform_keys(tmp_path / "keys" / "platform.jwks")
    opened: list[Store] = []

    def _open() -> tuple[Store, Outbox]:
        store = Store.open(tmp_path / "state" / "lockgw.db")
        opened.append(store)
        return store, Outbox(store, "seq-gw", gw, pf)

    yield _open
    for store in opened:
        with contextlib.suppress(sqlite3.ProgrammingError):
            store.close()


def _incidents(store: Store) -> list[str]:
    with store.read() as conn:
        return [r[0] for r in conn.execute("SELECT kind FROM incidents ORDER BY id")]


def test_a_normal_restart_continues_without_a_gap(open_outbox) -> None:  # type: ignore[no-untyped-def]
    store, outbox = open_outbox()
    seqs = outbox.enqueue_many([EVENT] * 5)
    store.close()
    store, outbox = open_outbox()
    assert outbox.enqueue(*EVENT) == seqs[-1] + 1
    assert "seq_resumed" not in _incidents(store)


def test_after_a_corrupt_database_the_counter_resumes_above_every_used_seq(
    open_outbox,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    store, outbox = open_outbox()
    used = outbox.enqueue_many([EVENT] * (BLOCK + 200))
    store.close()
    (tmp_path / "state" / "lockgw.db").write_bytes(b"not a database" * 100)
    store, outbox = open_outbox()
    assert store.recovery is not None
    after = outbox.enqueue(*EVENT)
    assert after is not None and after > max(s for s in used if s is not None)
    assert "seq_resumed" in _incidents(store)


def test_an_old_copy_of_the_database_does_not_reuse_numbers(
    open_outbox,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    db = tmp_path / "state" / "lockgw.db"
    store, outbox = open_outbox()
    outbox.enqueue_many([EVENT] * 50)
    store.close()
    shutil.copy(db, tmp_path / "backup.db")
    store, outbox = open_outbox()
    newest = outbox.enqueue_many([EVENT] * (2 * BLOCK))[-1]
    store.close()
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.db", db)
    store, outbox = open_outbox()
    resumed = outbox.enqueue(*EVENT)
    assert newest is not None and resumed is not None and resumed > newest


def test_the_reservation_is_written_before_numbers_past_it_are_used(tmp_path: Path) -> None:
    reservation = SeqReservation(tmp_path / "seq.reserved")
    assert reservation.reserved == 0
    reservation.ensure(1)
    assert SeqReservation(tmp_path / "seq.reserved").reserved == 1 + BLOCK
    reservation.ensure(BLOCK)
    assert SeqReservation(tmp_path / "seq.reserved").reserved == 1 + BLOCK, "no write inside"
    reservation.ensure(BLOCK + 2)
    assert SeqReservation(tmp_path / "seq.reserved").reserved == BLOCK + 2 + BLOCK
    (tmp_path / "bad").write_text("twelve")
    with pytest.raises(ValueError, match="not a sequence number reservation"):
        SeqReservation(tmp_path / "bad")

"""kill -9 between the record and the unlock: every recorded opening that did not happen
is followed by ``door.unlock_failed`` (reason ``gateway_restart``) at the next start."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from jwcrypto import jwk

from firmware_sim.platform import SimKeys, open_jw
from tests.support.mqtt import write_key_files

REPO = Path(__file__).resolve().parents[2]


class Doors:
    """The door process's state folder, keys and witness file, and what it recorded."""

    def __init__(self, tmp: Path) -> None:
        self.keys = SimKeys()
        self.gw_path, _ = write_key_files(tmp / "keys", self.keys.public_jwks())
        self.tmp = tmp
        self.witness = tmp / "witness.txt"
        self.witness.touch()

    def cmd(self, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "tests.support.unlock_proc",
            "--state", str(self.tmp / "state"), "--keys", str(self.tmp / "keys"),
            "--witness", str(self.witness), *extra,
        ]  # fmt: skip

    def start(self, *extra: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(self.cmd(*extra), cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    def records(self) -> list[dict[str, Any]]:
        """Every sealed record in the outbox, opened as the platform would."""
        verify = {
            k["kid"]: jwk.JWK(**k)
            for k in json.loads(self.gw_path.read_text())["keys"]
            if k["crv"] == "Ed25519"
        }
        conn = sqlite3.connect(self.tmp / "state" / "lockgw.db")
        try:
            rows = conn.execute("SELECT sealed FROM outbox ORDER BY seq").fetchall()
        finally:
            conn.close()
        return [open_jw(r[0], self.keys.enc, verify) for r in rows]

    def check(self) -> tuple[int, int, int]:
        """Assert every opening happened or is answered; (openings, happened, answered)."""
        records = self.records()
        happened = set(self.witness.read_text().split())
        opened = {r["seq"]: r["body"]["lock"] for r in records if r["type"] == "door.opened"}
        failed = {r["body"]["opened_seq"]: r for r in records if r["type"] == "door.unlock_failed"}
        for seq, lock in opened.items():
            if lock not in happened:
                assert seq in failed, f"opening {seq} at {lock} neither happened nor answered"
                answer = failed[seq]
                assert answer["seq"] > seq and answer["body"]["lock"] == lock
                assert answer["body"]["reason"] == "gateway_restart"
        return len(opened), len(happened & set(opened.values())), len(failed)


def test_killed_inside_the_unlock_the_opening_is_answered_at_restart(tmp_path: Path) -> None:
    doors = Doors(tmp_path)
    proc = doors.start("--die-in-unlock")
    assert proc.wait(30) == -signal.SIGKILL
    [opened] = [r for r in doors.records() if r["type"] == "door.opened"]
    assert doors.witness.read_text() == ""  # the door never opened
    doors.start("--openings", "0").wait(30)
    [failed] = [r for r in doors.records() if r["type"] == "door.unlock_failed"]
    assert failed["body"]["opened_seq"] == opened["seq"]
    assert failed["body"]["reason"] == "gateway_restart"
    assert doors.check() == (1, 0, 1)
    # a second start finds nothing left to answer
    doors.start("--openings", "0").wait(30)
    assert doors.check() == (1, 0, 1)


@pytest.mark.slow
def test_killed_20_times_at_random_every_opening_happened_or_is_answered(tmp_path: Path) -> None:
    doors = Doors(tmp_path)
    rng = random.Random(14)
    for _ in range(20):
        proc = doors.start()
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    doors.start("--openings", "0").wait(30)
    openings, happened, answered = doors.check()
    assert openings > 20 and happened > 0
    print(json.dumps({"openings": openings, "happened": happened, "answered": answered}))

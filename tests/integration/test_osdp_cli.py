"""``lockgw locks list|test|keyset`` against simulated locks."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli.common import EXIT_USAGE, UserError
from agent.cli.locks import register
from agent.devices.lockkeys import LockKeyStore
from firmware_sim.locks import SimBus
from firmware_sim.polling import wait_until


def run(argv: list[str]) -> int:
    """Parse and run like ``lockgw`` does (user errors -> one line, exit 2)."""
    parser = argparse.ArgumentParser(prog="lockgw")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"lockgw: {exc}")
        return EXIT_USAGE


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimBus]:
    bus = SimBus(tmp_path / "ttyOSDP0")
    bus.add_lock(3, None, install_mode=True)
    bus.start()
    yield bus
    bus.stop()


def common(tmp_path: Path) -> list[str]:
    return ["--port", str(tmp_path / "ttyOSDP0"), "--state-dir", str(tmp_path / "state")]


def test_keyset_install_then_list_test_and_rotate(
    tmp_path: Path, sim: SimBus, capsys: pytest.CaptureFixture[str]
) -> None:
    opts = common(tmp_path)
    lock = sim.locks[3]

    assert run(["locks", "list", "--addresses", "3", "--wait", "1", *opts]) == 1
    assert "no key (run keyset)" in capsys.readouterr().out

    assert run(["locks", "keyset", "3", *opts]) == EXIT_USAGE  # no key: needs --install
    assert "--install" in capsys.readouterr().out

    assert run(["locks", "keyset", "3", "--install", *opts]) == 0
    out = capsys.readouterr().out
    store = LockKeyStore.open(tmp_path / "state")
    first = store.get("bus0", 3)
    assert first is not None and lock.scbk == first
    assert first.hex() not in out and "verified" in out

    assert run(["locks", "list", "--addresses", "3", *opts]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("3"))
    assert "yes" in line and "active" in line and "closed" in line

    # Rotation over the secure channel.
    assert run(["locks", "keyset", "3", *opts]) == 0
    second = store.get("bus0", 3)
    assert second is not None and second != first and lock.scbk == second
    assert store.get_pending("bus0", 3) is None
    capsys.readouterr()

    def door() -> None:
        if lock.wait_relay(True, 10):
            lock.open_door()
            threading.Event().wait(0.5)
            lock.close_door()

    mover = threading.Thread(target=door)
    mover.start()
    code = run(["locks", "test", "3", "--seconds", "1", "--watch", "3", *opts])
    mover.join()
    out = capsys.readouterr().out
    assert code == 0
    assert "door open" in out and "door closed" in out
    assert wait_until(lambda: not lock.unlocked, 5)


def test_user_mistakes_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["locks", "list", "--addresses", "1", *common(tmp_path)]) == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run(["locks", "test", "300", *common(tmp_path)])
    assert "outside 0..126" in capsys.readouterr().err


def test_lock_without_key_is_never_tested_in_plain_mode(
    tmp_path: Path, sim: SimBus, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["locks", "test", "3", *common(tmp_path)]) == EXIT_USAGE
    assert "keyset" in capsys.readouterr().out
    assert sim.locks[3].record.commands == []

"""``lockgw run``: systemd notifications, watchdog, clean and quick shutdown."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.runtime.health import Heartbeats
from agent.runtime.sdnotify import Notifier, watchdog_interval_s
from tests.support.daemon import NotifySocket, json_log_lines, start_daemon


@pytest.fixture
def notify(tmp_path: Path) -> NotifySocket:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock  # type: ignore[misc]
    sock.close()


def test_ready_watchdog_stopping_in_order_and_sigterm_within_5s(
    write_config: Callable[..., Path],
    lockgw_cmd: list[str],
    clean_env: dict[str, str],
    notify: NotifySocket,
) -> None:
    env = {**clean_env, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "600000"}
    proc = start_daemon(lockgw_cmd, write_config(), env)
    try:
        notify.receive_until("READY=1", timeout=60)
        messages = notify.receive_until("WATCHDOG=1", timeout=5)
        notify.receive_until("WATCHDOG=1", timeout=5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        messages = notify.receive_until("STOPPING=1", timeout=5)
        code = proc.wait(timeout=5)
        elapsed = time.monotonic() - sent
    finally:
        proc.kill()
        _, stderr = proc.communicate()
    assert code == 0
    assert elapsed < 5
    kinds = [m.split("\n")[0] for m in messages]
    assert kinds[0] == "READY=1"
    assert kinds.count("WATCHDOG=1") >= 2
    assert kinds[-1] == "STOPPING=1"
    assert kinds.index("READY=1") < kinds.index("WATCHDOG=1") < kinds.index("STOPPING=1")
    logs = json_log_lines(stderr)
    assert any(entry["msg"] == "daemon ready" for entry in logs)
    assert logs[-1]["msg"] == "daemon stopped"


def test_sigint_also_stops_cleanly(
    write_config: Callable[..., Path],
    lockgw_cmd: list[str],
    clean_env: dict[str, str],
    notify: NotifySocket,
) -> None:
    proc = start_daemon(
        lockgw_cmd, write_config(), {**clean_env, "NOTIFY_SOCKET": str(notify.path)}
    )
    try:
        notify.receive_until("READY=1", timeout=60)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.communicate()


def test_corrupt_database_is_moved_aside_and_the_daemon_still_starts(
    write_config: Callable[..., Path],
    lockgw_cmd: list[str],
    clean_env: dict[str, str],
    notify: NotifySocket,
    tmp_path: Path,
) -> None:
    config = write_config()
    state = tmp_path / "state"
    state.mkdir()
    (state / "lockgw.db").write_bytes(b"\x00garbage" * 500)
    proc = start_daemon(lockgw_cmd, config, {**clean_env, "NOTIFY_SOCKET": str(notify.path)})
    try:
        notify.receive_until("READY=1", timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        _, stderr = proc.communicate()
    aside = list(state.glob("lockgw.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"\x00garbage" * 500
    assert any("moved aside" in str(e["msg"]) for e in json_log_lines(stderr))


def test_watchdog_withheld_while_a_loop_is_stale() -> None:
    now = [0.0]
    beats = Heartbeats(clock=lambda: now[0])
    beats.register("main", allowed_gap_s=2)
    beats.register("link", allowed_gap_s=5)
    now[0] = 3.0
    beats.beat("main")
    assert beats.stale() == []
    now[0] = 6.0
    beats.beat("main")
    assert beats.stale() == ["link"]
    beats.beat("link")
    assert beats.stale() == []


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None


def test_notifier_outside_systemd_is_silent(clean_env: dict[str, str]) -> None:
    notifier = Notifier(address="")
    assert not notifier.enabled
    assert notifier.ready() is False


def _drain(sock: NotifySocket) -> list[bytes]:
    sock.sock.setblocking(False)
    got = []
    with contextlib.suppress(BlockingIOError):
        while True:
            got.append(sock.sock.recv(100))
    return got


def test_watchdog_stops_while_a_parts_thread_is_dead(
    write_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    from types import SimpleNamespace

    from agent.config.schema import load_config
    from agent.runtime.daemon import Daemon
    from agent.runtime.gateway import Part

    sock = NotifySocket(tmp_path / "wd.sock")
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    daemon = Daemon(load_config(write_config()), Notifier(str(sock.path)))
    link_alive = [True]
    daemon.gateway = SimpleNamespace(  # type: ignore[assignment]
        parts=[Part("link", lambda: None, lambda: None, lambda: link_alive[0])]
    )
    phases: dict[str, list[bytes]] = {}

    async def scenario() -> None:
        daemon._stop = asyncio.Event()
        task = asyncio.create_task(daemon._supervise())
        await asyncio.sleep(0.6)
        phases["alive"] = _drain(sock)
        link_alive[0] = False
        await asyncio.sleep(0.15)
        _drain(sock)  # a ping may have been on its way
        await asyncio.sleep(0.6)
        phases["dead"] = _drain(sock)
        link_alive[0] = True
        await asyncio.sleep(0.4)
        phases["back"] = _drain(sock)
        daemon._stop.set()
        await task

    try:
        asyncio.run(scenario())
    finally:
        sock.close()
    assert len(phases["alive"]) >= 3
    assert phases["dead"] == [], "the watchdog was pinged while a part's thread was dead"
    assert phases["back"], "pinging resumes when the part is alive again"

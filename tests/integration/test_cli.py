"""The CLI as a user runs it: help, version, status, errors without tracebacks."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from agent import __version__
from tests.support.daemon import NotifySocket, start_daemon


def _run(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand_with_a_line_of_help(lockgw_cmd: list[str]) -> None:
    result = _run(lockgw_cmd, "--help")
    assert result.returncode == 0
    for command in ("run", "version", "config", "status"):
        assert any(line.strip().startswith(command + " ") for line in result.stdout.splitlines()), (
            command
        )


def test_version(lockgw_cmd: list[str]) -> None:
    result = _run(lockgw_cmd, "version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"lockgw {__version__}"


def test_unknown_subcommand_is_a_usage_error(lockgw_cmd: list[str]) -> None:
    result = _run(lockgw_cmd, "frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_before_first_run_says_so(
    lockgw_cmd: list[str], write_config: Callable[..., Path]
) -> None:
    result = _run(lockgw_cmd, "status", "--config", str(write_config()))
    assert result.returncode == 2
    assert "the daemon has not run with this configuration" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_reads_the_store_after_a_run(
    lockgw_cmd: list[str],
    write_config: Callable[..., Path],
    clean_env: dict[str, str],
    tmp_path: Path,
) -> None:
    config = write_config()
    notify = NotifySocket(tmp_path / "n.sock")
    proc = start_daemon(lockgw_cmd, config, {**clean_env, "NOTIFY_SOCKET": str(notify.path)})
    try:
        notify.receive_until("READY=1", timeout=60)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.communicate()
        notify.close()
    result = _run(lockgw_cmd, "status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "test-gw-01" in result.stdout
    assert "schema        version" in result.stdout
    as_json = _run(lockgw_cmd, "status", "--config", str(config), "--json")
    assert '"schema_version"' in as_json.stdout

"""What `run` would trip over is found first: by `config check`, `doctor` and the daemon's start."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config.preflight import key_file_problems, path_problems
from agent.config.schema import load_config
from agent.doctor.files import check_key_files


def test_every_loose_key_file_is_named_with_its_fix(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = load_config(write_config())
    state = config.gateway.state_dir
    state.mkdir(mode=0o777)
    os.chmod(state, 0o777)
    (state / "local.key").write_bytes(b"k" * 32)
    os.chmod(state / "local.key", 0o666)
    os.chmod(config.keys.gateway_keys, 0o644)
    os.chmod(config.keys.platform_keys, 0o666)
    problems = {(p.key, p.fix) for p in key_file_problems(config)}
    assert problems == {
        ("gateway.state_dir", f"chmod 700 {state}"),
        ("gateway.state_dir", f"chmod 600 {state / 'local.key'}"),
        ("keys.gateway_keys", f"chmod 600 {config.keys.gateway_keys}"),
        ("keys.platform_keys", f"chmod go-w {config.keys.platform_keys}"),
    }
    check = check_key_files(config)
    assert check.status == "FAIL" and "local.key has mode 0666" in check.detail
    for path in (state, state / "local.key", config.keys.gateway_keys):
        os.chmod(path, 0o700 if path == state else 0o600)
    os.chmod(config.keys.platform_keys, 0o644)
    assert key_file_problems(config) == []
    assert check_key_files(config).status == "OK"


@pytest.mark.parametrize(
    ("extra", "key", "says"),
    [
        ("socket_long", "gateway.control_socket", "bytes; a Unix socket path holds at most 107"),
        ("state_proc", "gateway.state_dir", "is under /proc"),
        ("socket_under_file", "gateway.control_socket", "is a file, so"),
    ],
)
def test_config_check_and_run_name_the_key_without_a_traceback(
    write_config: Callable[..., Path],
    lockgw_cmd: list[str],
    tmp_path: Path,
    extra: str,
    key: str,
    says: str,
) -> None:
    path = write_config()
    text = path.read_text(encoding="utf-8")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    replace = {
        "socket_long": ("control.sock", "s" * 120 + ".sock"),
        "state_proc": (f'state_dir = "{tmp_path / "state"}"', 'state_dir = "/proc/lockgw"'),
        "socket_under_file": ("control.sock", "a-file/control.sock"),
    }[extra]
    path.write_text(text.replace(*replace), encoding="utf-8")
    config = load_config(path)
    assert [p.key for p in path_problems(config)] == [key]
    for command in ("config", "run"):
        args = ["config", "check"] if command == "config" else ["run"]
        done = subprocess.run(
            [*lockgw_cmd, *args, "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert key in done.stderr and says in done.stderr
        assert "Traceback" not in done.stderr


def test_run_refuses_a_world_writable_local_key(
    write_config: Callable[..., Path], lockgw_cmd: list[str]
) -> None:
    config = load_config(write_config())
    state = config.gateway.state_dir
    state.mkdir(mode=0o700)
    key = state / "local.key"
    key.write_bytes(b"k" * 32)
    os.chmod(key, 0o666)
    done = subprocess.run(
        [*lockgw_cmd, "run", "--config", str(write_config())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"{key} has mode 0666" in done.stderr and f"chmod 600 {key}" in done.stderr

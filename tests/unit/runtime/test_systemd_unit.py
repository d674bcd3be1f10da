"""The service unit passes ``systemd-analyze verify`` and scores ≤ 2.0 in ``security``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _unit_with_real_binary(repo_root: Path, tmp_path: Path) -> Path:
    # verify checks that ExecStart exists: point it at this checkout's entry point,
    # as the install layout (/opt/lockgw virtualenv) would.
    text = (repo_root / "systemd" / "lockgw.service").read_text(encoding="utf-8")
    exe = Path(sys.executable).with_name("lockgw")
    assert "ExecStart=/opt/lockgw/bin/lockgw run" in text
    unit = tmp_path / "lockgw.service"
    unit.write_text(text.replace("/opt/lockgw/bin/lockgw", str(exe.resolve())), encoding="utf-8")
    return unit


def test_unit_verifies(repo_root: Path, tmp_path: Path) -> None:
    unit = _unit_with_real_binary(repo_root, tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_unit_security_exposure_at_most_2(repo_root: Path, tmp_path: Path) -> None:
    unit = _unit_with_real_binary(repo_root, tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0


def test_unit_has_the_required_settings(repo_root: Path) -> None:
    text = (repo_root / "systemd" / "lockgw.service").read_text(encoding="utf-8")
    for setting in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=always",
        "StateDirectory=lockgw",
        "ConfigurationDirectory=lockgw",
        "User=lockgw",
        "SupplementaryGroups=dialout",
    ):
        assert setting in text, setting

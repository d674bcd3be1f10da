"""``lockgw doctor``'s face checks: the model files are the shipped ones; liveness is on."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.config.schema import Config, parse_config
from agent.doctor import FAIL, OK, WARN, Report, check_face_models
from agent.face.modelfiles import MINIFASNET_V2, default_models_dir


def _config(**face: object) -> Config:
    return parse_config(
        {
            "gateway": {"id": "test-gw-01"},
            "link": {"transport": "tcp"},
            "buses": [{"name": "bus0", "port": "/dev/ttyUSB0"}],
            "doors": [{"id": "L101", "bus": "bus0", "address": 1, "camera": "0"}],
            "face": face,
        }
    )


def test_shipped_models_and_pad_are_ok() -> None:
    checks = {c.name: c for c in check_face_models(_config())}
    assert checks["face models"].status == OK and "4 files" in checks["face models"].detail
    assert checks["face liveness"].status == OK and "pad" in checks["face liveness"].detail


def test_a_changed_model_file_fails_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    shutil.copytree(default_models_dir(), folder)
    data = bytearray((folder / MINIFASNET_V2).read_bytes())
    data[1000] ^= 0x01
    (folder / MINIFASNET_V2).write_bytes(bytes(data))
    checks = {c.name: c for c in check_face_models(_config(models_dir=str(folder)))}
    bad = checks["face models"]
    assert bad.status == FAIL and MINIFASNET_V2 in bad.detail and "SHA256SUMS" in bad.detail
    assert "never edit SHA256SUMS" in bad.fix
    report = Report(checks=list(checks.values()))
    assert report.exit_code == 1


def test_liveness_off_is_allowed_only_explicitly_and_warned() -> None:
    checks = check_face_models(_config(liveness="off", allow_without_liveness=True))
    warn = next(c for c in checks if c.name == "face liveness")
    assert warn.status == WARN and "printed photo" in warn.detail
    report = Report(checks=checks)
    assert report.exit_code == 0 and report.counts()[WARN] == 1


def test_no_camera_no_face_checks() -> None:
    config = parse_config({"gateway": {"id": "test-gw-01"}, "link": {"transport": "tcp"}})
    assert check_face_models(config) == []

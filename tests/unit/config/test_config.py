"""Configuration: bad values are refused with the key, the value and what was expected."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config.schema import ConfigError, load_config, parse_config

BASE = {"gateway": {"id": "test-gw-01"}, "link": {"transport": "tcp"}}


def _with(**sections: object) -> dict[str, object]:
    data: dict[str, object] = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            merged = dict(data[name])  # type: ignore[arg-type]
            merged.update(value)
            data[name] = merged
        else:
            data[name] = value
    return data


BUS = {"name": "bus0", "port": "/dev/ttyUSB0"}
DOOR = {"id": "L101", "bus": "bus0", "address": 1}

# (what is wrong, configuration, text the error must contain)
BAD_CONFIGS = [
    ("gateway id pattern", _with(gateway={"id": "Bad_ID"}), "gateway.id = 'Bad_ID'"),
    ("missing gateway id", {"gateway": {}, "link": {"transport": "tcp"}}, "gateway.id"),
    ("port out of range", _with(link={"port": 70000}), "link.port = 70000"),
    ("port wrong type", _with(link={"port": "eighty"}), "link.port = 'eighty'"),
    ("unknown transport", _with(link={"transport": "udp"}), "link.transport = 'udp'"),
    ("misspelt key", _with(link={"hostname": "x"}), "link.hostname: unknown key"),
    ("unknown section", _with(lnk={"host": "x"}), "lnk: unknown key"),
    ("tls without files", _with(link={"transport": "tls"}), "ca_file"),
    ("session expiry too short", _with(link={"session_expiry_s": 60}), "link.session_expiry_s"),
    (
        "bad baud rate",
        _with(buses=[{**BUS, "baudrate": 12345}]),
        "buses[0].baudrate = 12345",
    ),
    (
        "door on unknown bus",
        _with(buses=[BUS], doors=[{**DOOR, "bus": "bus9"}]),
        "bus = 'bus9'",
    ),
    ("OSDP address out of range", _with(buses=[BUS], doors=[{**DOOR, "address": 127}]), "address"),
    (
        "duplicate door id",
        _with(buses=[BUS], doors=[DOOR, {**DOOR, "address": 2}]),
        "doors.id = 'L101' appears more than once",
    ),
    (
        "two doors on one address",
        _with(buses=[BUS], doors=[DOOR, {**DOOR, "id": "L102"}]),
        "'bus0:1' appears more than once",
    ),
    ("threshold out of range", _with(face={"threshold": 2.5}), "face.threshold = 2.5"),
    (
        "liveness off without saying so",
        _with(face={"liveness": "off"}),
        "liveness = 'off' lets a printed photo of a guest match; it needs"
        " allow_without_liveness = true",
    ),
    (
        "pad on dlib",
        _with(face={"model": "dlib"}),
        "liveness = 'pad' needs model = 'mobilefacenet'",
    ),
    ("face model unknown", _with(face={"model": "facenet"}), "face.model = 'facenet'"),
    ("liveness mode unknown", _with(face={"liveness": "wink"}), "face.liveness = 'wink'"),
    ("negative grace", _with(policy={"offline_grace_h": -1}), "policy.offline_grace_h = -1"),
    ("command decoder without command", _with(readers={"wlt_decoder": "command"}), "wlt_command"),
    ("log level", _with(gateway={"id": "test-gw-01", "log_level": "loud"}), "log_level = 'loud'"),
    (
        "eid wait past the contract",
        _with(eid={"answer_timeout_s": 12}),
        "eid.answer_timeout_s = 12",
    ),
    ("eid wait zero", _with(eid={"answer_timeout_s": 0}), "eid.answer_timeout_s = 0"),
    (
        "qr_camera without a camera",
        _with(buses=[BUS], doors=[{**DOOR, "qr_camera": True}]),
        "qr_camera = true needs camera",
    ),
    (
        "qr scanner on the reader's port",
        _with(buses=[BUS], doors=[{**DOOR, "reader_port": "/dev/ttyS1", "qr_port": "/dev/ttyS1"}]),
        "qr_port = '/dev/ttyS1', which is also a bus or ID reader port",
    ),
    (
        "qr scanner baud rate",
        _with(buses=[BUS], doors=[{**DOOR, "qr_port": "/dev/ttyS2", "qr_baudrate": 1234}]),
        "qr_baudrate = 1234",
    ),
]


@pytest.mark.parametrize(("what", "data", "expected"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_configuration_names_the_key(what: str, data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "test.toml")
    assert expected in str(caught.value), str(caught.value)
    assert "test.toml" in str(caught.value)


def test_every_problem_is_listed_not_only_the_first() -> None:
    data = _with(link={"port": 0, "keepalive_s": 1}, face={"threshold": 2})
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert len(caught.value.problems) == 3


def test_example_configuration_is_valid(repo_root: Path) -> None:
    config = load_config(repo_root / "config" / "gateway.example.toml")
    assert config.gateway.id == "demo-gw-01"
    assert config.link.transport == "tls"


def test_not_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text('[gateway]\nid = "abc\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2"):
        load_config(path)


def test_config_check_command(
    write_config: Callable[..., Path], lockgw_cmd: list[str], tmp_path: Path
) -> None:
    good = write_config()
    ok = subprocess.run(
        [*lockgw_cmd, "config", "check", "--config", str(good)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nid = "test-gw-01"\n[link]\nport = 99999\n', encoding="utf-8")
    failed = subprocess.run(
        [*lockgw_cmd, "config", "check", "--config", str(bad)], capture_output=True, text=True
    )
    assert failed.returncode == 2
    assert "link.port = 99999" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert failed.stdout == ""


def test_daemon_refuses_to_start_on_bad_configuration(
    tmp_path: Path, lockgw_cmd: list[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nid = "x"\n', encoding="utf-8")
    result = subprocess.run(
        [*lockgw_cmd, "run", "--config", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "gateway.id = 'x'" in result.stderr
    assert "link: required key is missing" in result.stderr

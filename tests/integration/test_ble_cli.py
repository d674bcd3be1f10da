"""Commissioning BLE locks with the daemon stopped: ``lockgw locks pair``, ``locks ble``
and ``locks list --ble`` against the radio simulator in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.ble.process import BleRadioProcess


@pytest.fixture
def radio() -> Iterator[BleRadioProcess]:
    sim = BleRadioProcess(2, pairing=False)
    try:
        yield sim
    finally:
        sim.close()


def write_config(tmp_path: Path, radio: BleRadioProcess) -> Path:
    doors = "".join(
        f'\n[[doors]]\nid = "L{i + 1}"\nlock = "ble:nuki:{address}"\n'
        for i, address in enumerate(radio.addresses)
    )
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[gateway]\nid = "test-gw-01"\nstate_dir = "{tmp_path / "state"}"\n'
        f'control_socket = "{tmp_path / "gw.sock"}"\n'
        '[link]\ntransport = "tcp"\n'
        f'[ble]\ntransport = "{radio.transport}"\nconnect_timeout_s = 1.0\n{doors}'
    )
    return path


def lockgw(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "locks", *argv, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pair_test_and_list(tmp_path: Path, radio: BleRadioProcess) -> None:
    config = write_config(tmp_path, radio)
    refused = lockgw(config, "pair", "L1")
    assert refused.returncode == 1 and "not pairing" in refused.stderr
    radio.request(op="pairing", lock=0, on=True)
    paired = lockgw(config, "pair", "L1")
    assert paired.returncode == 0, paired.stderr
    assert radio.lock_state(0)["authorizations"] == 1
    credentials = (tmp_path / "state" / "ble-keys.json").read_text()
    assert "nuki/" in credentials

    tested = lockgw(config, "ble", "L1", "--unlock", "0.2")
    assert tested.returncode == 0, tested.stderr
    assert "unlocked" in tested.stdout and tested.stdout.rstrip().endswith("%")
    assert radio.lock_state(0)["actions"] == [1, 2]

    again = lockgw(config, "test", "L1", "--seconds", "0.2")
    assert again.returncode == 0, again.stderr
    assert radio.lock_state(0)["actions"] == [1, 2, 1, 2]

    listed = lockgw(config, "list", "--ble", "--json")
    rows = {r["door_id"]: r for r in json.loads(listed.stdout)["locks"]}
    assert rows["L1"]["paired"] and rows["L1"]["online"] and rows["L1"]["door"] == "closed"
    assert not rows["L2"]["paired"]
    assert listed.returncode == 1  # L2 is not paired yet

    unpaired = lockgw(config, "ble", "L2")
    assert unpaired.returncode == 2 and "locks pair L2" in unpaired.stderr

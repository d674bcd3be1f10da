"""BLE lock credentials sealed at rest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.devices.blekeys import BleKeyError, BleKeyStore

A = "F0:00:00:00:00:01"
B = "F0:00:00:00:00:02"
SECRET = bytes(range(32)) + b"\x07\x00\x00\x00" + bytes(24)


def test_round_trip_and_nothing_readable_on_disk(tmp_path: Path) -> None:
    store = BleKeyStore.open(tmp_path)
    assert store.get("nuki", A) is None
    store.put("nuki", A.lower(), SECRET)
    assert store.get("nuki", A) == SECRET
    assert store.paired() == [f"nuki/{A}"]
    raw = (tmp_path / "ble-keys.json").read_bytes()
    assert SECRET[:32] not in raw and SECRET[:32].hex().encode() not in raw
    assert os.stat(tmp_path / "ble-keys.json").st_mode & 0o777 == 0o600


def test_blob_moved_to_another_lock_does_not_open(tmp_path: Path) -> None:
    store = BleKeyStore.open(tmp_path)
    store.put("nuki", A, SECRET)
    path = tmp_path / "ble-keys.json"
    data = json.loads(path.read_text())
    data["locks"][f"nuki/{B}"] = data["locks"][f"nuki/{A}"]
    path.write_text(json.dumps(data))
    with pytest.raises(BleKeyError, match="do not open"):
        store.get("nuki", B)


def test_another_local_key_does_not_open(tmp_path: Path) -> None:
    BleKeyStore.open(tmp_path).put("nuki", A, SECRET)
    (tmp_path / "local.key").write_bytes(os.urandom(32))
    with pytest.raises(BleKeyError):
        BleKeyStore.open(tmp_path).get("nuki", A)


def test_damaged_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "ble-keys.json").write_text("{not json")
    with pytest.raises(BleKeyError, match="not valid JSON"):
        BleKeyStore.open(tmp_path).get("nuki", A)

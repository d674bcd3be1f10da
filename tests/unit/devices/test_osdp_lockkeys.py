"""The sealed SCBK store under the state directory."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.devices.lockkeys import LockKeyError, LockKeyStore, new_scbk


def test_round_trip_sealed_at_rest_with_mode_0600(tmp_path: Path) -> None:
    store = LockKeyStore.open(tmp_path)
    key = new_scbk()
    store.put("bus0", 3, key)
    assert LockKeyStore.open(tmp_path).get("bus0", 3) == key
    assert store.get("bus0", 4) is None
    raw = store.path.read_bytes()
    assert key not in raw and key.hex().encode() not in raw
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.addresses("bus0") == [3]


def test_keys_are_fresh_and_16_bytes() -> None:
    a, b = new_scbk(), new_scbk()
    assert len(a) == 16 and a != b


def test_a_blob_moved_to_another_lock_does_not_open(tmp_path: Path) -> None:
    store = LockKeyStore.open(tmp_path)
    store.put("bus0", 1, new_scbk())
    data = json.loads(store.path.read_text())
    data["locks"]["bus0/2"] = data["locks"]["bus0/1"]
    store.path.write_text(json.dumps(data))
    with pytest.raises(LockKeyError, match="bus0/2"):
        store.get("bus0", 2)


def test_pending_key_becomes_current_only_when_committed(tmp_path: Path) -> None:
    store = LockKeyStore.open(tmp_path)
    old, new = new_scbk(), new_scbk()
    store.put("bus0", 7, old)
    store.put_pending("bus0", 7, new)
    assert store.get("bus0", 7) == old and store.get_pending("bus0", 7) == new
    assert store.commit_pending("bus0", 7) == new
    assert store.get("bus0", 7) == new and store.get_pending("bus0", 7) is None


def test_another_local_key_cannot_open_the_file(tmp_path: Path) -> None:
    LockKeyStore.open(tmp_path).put("bus0", 1, new_scbk())
    (tmp_path / "local.key").write_bytes(b"\x00" * 32)
    with pytest.raises(LockKeyError, match="does not open"):
        LockKeyStore.open(tmp_path).get("bus0", 1)


def test_damaged_file_is_named_in_the_error(tmp_path: Path) -> None:
    store = LockKeyStore.open(tmp_path)
    store.path.write_text("{not json")
    with pytest.raises(LockKeyError, match=r"osdp-keys\.json"):
        store.get("bus0", 1)


def test_wrong_key_length_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        LockKeyStore.open(tmp_path).put("bus0", 1, b"short")

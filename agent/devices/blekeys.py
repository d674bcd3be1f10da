"""BLE lock credentials (the shared key and authorization id from pairing), sealed at rest.

They live in ``<state_dir>/ble-keys.json``, each sealed with the gateway's
local :class:`~agent.state.secretbox.SecretBox` under a context naming the
lock's family and address, so a blob copied to another lock's entry does not
open. Written atomically (temporary file, fsync, rename; mode 0600) under an
advisory lock, so the daemon and a technician's ``lockgw locks pair`` can share
the file. Never logged, never printed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.state.secretbox import SecretBox, SecretBoxError

KEY_FILE_NAME = "ble-keys.json"
_FORMAT = 1


class BleKeyError(Exception):
    """The credentials file is unreadable, damaged, or holds a blob that does not open."""


class BleKeyStore:
    """Sealed per-lock BLE credentials under the state directory."""

    def __init__(self, state_dir: Path, box: SecretBox) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / KEY_FILE_NAME
        self._box = box

    @classmethod
    def open(cls, state_dir: Path) -> BleKeyStore:
        """The store of ``state_dir``, with its local key (created if absent)."""
        state_dir = Path(state_dir)
        return cls(state_dir, SecretBox.load_or_create(state_dir / "local.key"))

    def get(self, family: str, address: str) -> bytes | None:
        """The lock's credentials, or None if it was never paired."""
        slot = _slot(family, address)
        sealed = self._load()["locks"].get(slot)
        if sealed is None:
            return None
        try:
            return self._box.open(base64.b64decode(sealed, validate=True), _context(slot))
        except (binascii.Error, TypeError, SecretBoxError) as exc:
            raise BleKeyError(
                f"{self.path}: the credentials of {slot} do not open "
                "(damaged, moved from another lock, or sealed under another local key)"
            ) from exc

    def put(self, family: str, address: str, credentials: bytes) -> None:
        """Keep the credentials a pairing returned."""
        slot = _slot(family, address)
        blob = base64.b64encode(self._box.seal(credentials, _context(slot))).decode("ascii")
        with self._locked() as data:
            data["locks"][slot] = blob

    def remove(self, family: str, address: str) -> None:
        """Forget a lock (removed from the building, or re-paired after a reset)."""
        with self._locked() as data:
            data["locks"].pop(_slot(family, address), None)

    def paired(self) -> list[str]:
        """``family/address`` of every lock with credentials."""
        return sorted(self._load()["locks"])

    def _load(self) -> dict[str, Any]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"format": _FORMAT, "locks": {}}
        except OSError as exc:
            raise BleKeyError(f"{self.path}: cannot read: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BleKeyError(f"{self.path}: not valid JSON (line {exc.lineno})") from exc
        if (
            not isinstance(data, dict)
            or data.get("format") != _FORMAT
            or not isinstance(data.get("locks"), dict)
        ):
            raise BleKeyError(f"{self.path}: not a lockgw BLE credentials file")
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.state_dir / (KEY_FILE_NAME + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            data = self._load()
            yield data
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.state_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            os.close(lock_fd)


def _slot(family: str, address: str) -> str:
    if not family.isidentifier() or len(address.split(":")) != 6:
        raise ValueError(f"not a BLE lock: family {family!r}, address {address!r}")
    return f"{family}/{address.upper()}"


def _context(slot: str) -> str:
    return f"ble-credentials:{slot}"

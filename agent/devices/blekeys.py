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
from pathlib import Path

from agent.devices.keyfile import KeyFile
from agent.state.secretbox import SecretBox, SecretBoxError

KEY_FILE_NAME = "ble-keys.json"


class BleKeyError(Exception):
    """The credentials file is unreadable, damaged, or holds a blob that does not open."""


class BleKeyStore:
    """Sealed per-lock BLE credentials under the state directory."""

    def __init__(self, state_dir: Path, box: SecretBox) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / KEY_FILE_NAME
        self._file = KeyFile(self.path, "BLE credentials file", BleKeyError)
        self._box = box

    @classmethod
    def open(cls, state_dir: Path) -> BleKeyStore:
        """The store of ``state_dir``, with its local key (created if absent)."""
        state_dir = Path(state_dir)
        return cls(state_dir, SecretBox.load_or_create(state_dir / "local.key"))

    def get(self, family: str, address: str) -> bytes | None:
        """The lock's credentials, or None if it was never paired."""
        slot = _slot(family, address)
        sealed = self._file.load()["locks"].get(slot)
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
        with self._file.locked() as data:
            data["locks"][slot] = blob

    def remove(self, family: str, address: str) -> None:
        """Forget a lock (removed from the building, or re-paired after a reset)."""
        with self._file.locked() as data:
            data["locks"].pop(_slot(family, address), None)

    def paired(self) -> list[str]:
        """``family/address`` of every lock with credentials."""
        return sorted(self._file.load()["locks"])


def _slot(family: str, address: str) -> str:
    if not family.isidentifier() or len(address.split(":")) != 6:
        raise ValueError(f"not a BLE lock: family {family!r}, address {address!r}")
    return f"{family}/{address.upper()}"


def _context(slot: str) -> str:
    return f"ble-credentials:{slot}"

"""OSDP secure-channel keys (SCBK), one per lock, sealed at rest.

The keys live in ``<state_dir>/osdp-keys.json``, each sealed with the
gateway's local :class:`~agent.state.secretbox.SecretBox` under a context naming its
bus and address, so a blob copied to another lock's slot does not open. The
file is written atomically (temporary file, fsync, rename; mode 0600) under an
advisory lock, so the daemon and a technician's CLI can share it.

A key being handed to a lock is first stored as *pending*; it becomes the
lock's key only once the lock has completed a secure channel with it. If the
gateway dies in between, the next keyset attempt finds both keys.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from pathlib import Path

from agent.devices.keyfile import KeyFile
from agent.state.secretbox import SecretBox, SecretBoxError

KEY_FILE_NAME = "osdp-keys.json"
SCBK_BYTES = 16


class LockKeyError(Exception):
    """The key file is unreadable, damaged, or holds a blob that does not open."""


def new_scbk() -> bytes:
    """A fresh random 16-byte secure-channel base key."""
    return secrets.token_bytes(SCBK_BYTES)


class LockKeyStore:
    """Sealed per-lock SCBKs under the state directory."""

    def __init__(self, state_dir: Path, box: SecretBox) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / KEY_FILE_NAME
        self._file = KeyFile(self.path, "OSDP key file", LockKeyError)
        self._box = box

    @classmethod
    def open(cls, state_dir: Path) -> LockKeyStore:
        """The store of ``state_dir``, with its local key (created if absent)."""
        state_dir = Path(state_dir)
        return cls(state_dir, SecretBox.load_or_create(state_dir / "local.key"))

    # ------------------------------------------------------------ reading
    def get(self, bus: str, address: int) -> bytes | None:
        """The lock's current key, or None if it has none."""
        return self._read_slot(bus, address, "scbk")

    def get_pending(self, bus: str, address: int) -> bytes | None:
        """A key handed to the lock but not yet confirmed, or None."""
        return self._read_slot(bus, address, "pending")

    def addresses(self, bus: str) -> list[int]:
        """Addresses on ``bus`` that have a current key."""
        prefix = f"{bus}/"
        return sorted(
            int(slot[len(prefix) :])
            for slot, entry in self._file.load()["locks"].items()
            if slot.startswith(prefix) and "scbk" in entry
        )

    # ------------------------------------------------------------ writing
    def put(self, bus: str, address: int, scbk: bytes) -> None:
        """Set the lock's current key (dropping any pending one)."""
        _check_key(scbk)
        with self._file.locked() as data:
            entry = data["locks"].setdefault(_slot(bus, address), {})
            entry["scbk"] = self._seal(bus, address, "scbk", scbk)
            entry.pop("pending", None)

    def put_pending(self, bus: str, address: int, scbk: bytes) -> None:
        """Record a key about to be sent to the lock."""
        _check_key(scbk)
        with self._file.locked() as data:
            entry = data["locks"].setdefault(_slot(bus, address), {})
            entry["pending"] = self._seal(bus, address, "pending", scbk)

    def commit_pending(self, bus: str, address: int) -> bytes:
        """The lock confirmed the pending key: make it current; returns it."""
        pending = self.get_pending(bus, address)
        if pending is None:
            raise LockKeyError(f"no pending key for lock {_slot(bus, address)}")
        self.put(bus, address, pending)
        return pending

    def discard_pending(self, bus: str, address: int) -> None:
        """Forget a pending key the lock did not take."""
        with self._file.locked() as data:
            entry = data["locks"].get(_slot(bus, address))
            if entry is not None:
                entry.pop("pending", None)

    def remove(self, bus: str, address: int) -> None:
        """Forget every key of a lock (it was removed from the building)."""
        with self._file.locked() as data:
            data["locks"].pop(_slot(bus, address), None)

    # ----------------------------------------------------------- internals
    def _seal(self, bus: str, address: int, kind: str, scbk: bytes) -> str:
        blob = self._box.seal(scbk, _context(bus, address, kind))
        return base64.b64encode(blob).decode("ascii")

    def _read_slot(self, bus: str, address: int, kind: str) -> bytes | None:
        entry = self._file.load()["locks"].get(_slot(bus, address))
        if not entry or kind not in entry:
            return None
        try:
            blob = base64.b64decode(entry[kind], validate=True)
            key = self._box.open(blob, _context(bus, address, kind))
        except (binascii.Error, TypeError, SecretBoxError) as exc:
            raise LockKeyError(
                f"{self.path}: the {kind} key of lock {_slot(bus, address)} does not open "
                "(damaged, moved from another slot, or sealed under another local key)"
            ) from exc
        if len(key) != SCBK_BYTES:
            raise LockKeyError(f"{self.path}: lock {_slot(bus, address)} holds a malformed key")
        return key


def _slot(bus: str, address: int) -> str:
    if not bus or "/" in bus:
        raise ValueError(f"bus name {bus!r} must be non-empty and contain no '/'")
    if not 0 <= address <= 126:
        raise ValueError(f"lock address {address} is outside 0..126")
    return f"{bus}/{address}"


def _context(bus: str, address: int, kind: str) -> str:
    return f"osdp-scbk:{kind}:{_slot(bus, address)}"


def _check_key(scbk: bytes) -> None:
    if len(scbk) != SCBK_BYTES:
        raise ValueError(f"a secure-channel key is {SCBK_BYTES} bytes, got {len(scbk)}")

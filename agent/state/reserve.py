"""A reserve file in the state directory: room for the records that must still be written
when the disk is full.

A few MB are held in ``reserve.bin``. When a write fails for lack of space
(SQLite's ``SQLITE_FULL``), the reserve is released, so the refusal, the alert
and the incident that explain it can still be committed; the door stays locked
(nothing is unlocked without its record). The daemon calls :meth:`DiskReserve.ensure`
periodically: once space returns, the reserve is taken again and the gateway is
back to normal by itself.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "reserve.bin"
DEFAULT_BYTES = 4 * 1024 * 1024


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` is SQLite's "database or disk is full" (or the OS's ENOSPC)."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno == 28


class DiskReserve:
    """The reserve file: held while there is room, released when a write needs it."""

    def __init__(self, state_dir: Path, size: int = DEFAULT_BYTES) -> None:
        self.path = state_dir / FILE_NAME
        self.size = size
        self.released_count = 0

    @property
    def held(self) -> bool:
        """The reserve is in place (the disk had room for it)."""
        try:
            return self.path.stat().st_size >= self.size
        except FileNotFoundError:
            return False

    def ensure(self) -> bool:
        """Take the reserve if it is not held and there is room; whether it is held now."""
        if self.held:
            return True
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("disk reserve not taken", extra={"error": str(exc)})
            return False
        log.info("disk reserve in place", extra={"bytes": self.size})
        return True

    def release(self) -> bool:
        """Free the reserve for a write that found the disk full; whether anything was freed."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        self.released_count += 1
        log.error("disk full: reserve released for the records that must be written")
        return True

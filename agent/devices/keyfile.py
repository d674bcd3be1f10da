"""A lock key file in the state directory: JSON ``{"format": 1, "locks": {slot: blob}}``.

Shared by the OSDP secure-channel keys and the BLE lock credentials: read with
clear errors, changed read-modify-write under an advisory lock (the daemon and a
technician's command may share it) and written atomically (temporary file, fsync,
rename, directory fsync; mode 0600). The blobs are sealed by the callers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORMAT = 1


class KeyFile:
    """One key file; ``error`` is the exception type its problems are raised as."""

    def __init__(self, path: Path, what: str, error: type[Exception]) -> None:
        self.path = Path(path)
        self._what = what
        self._error = error

    def load(self) -> dict[str, Any]:
        """The file's contents (empty when it does not exist yet)."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"format": FORMAT, "locks": {}}
        except OSError as exc:
            raise self._error(f"{self.path}: cannot read: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise self._error(f"{self.path}: not valid JSON (line {exc.lineno})") from exc
        if (
            not isinstance(data, dict)
            or data.get("format") != FORMAT
            or not isinstance(data.get("locks"), dict)
        ):
            raise self._error(f"{self.path}: not a lockgw {self._what} (format {FORMAT})")
        return data

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under an advisory lock; written atomically on success."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            data = self.load()
            yield data
            self._write(data)
        finally:
            os.close(lock_fd)

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, sort_keys=True)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

"""A small real disk for disk-full tests: a tmpfs mounted over a directory, and filling it."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(mount: Path, size: str = "8m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` over ``mount`` (skips the test where that is not allowed)."""
    mount.mkdir(parents=True, exist_ok=True, mode=0o700)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill the disk to the last byte; the filler's path."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    with filler.open("ab", buffering=0) as f, contextlib.suppress(OSError):
        for _ in range(65536):
            f.write(b"\0" * 16)
            f.flush()
    return filler

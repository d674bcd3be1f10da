"""A simulated device's stable port name: a symlink to its pseudo-terminal, swapped atomically."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def point_link(link: Path, slave_fd: int) -> None:
    """Make ``link`` name the pty behind ``slave_fd`` (a new symlink renamed over the old)."""
    tmp = link.with_name(link.name + ".new")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(os.ttyname(slave_fd))
    os.replace(tmp, link)

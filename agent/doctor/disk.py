"""Free space on the state directory's filesystem."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.config.schema import Config
from agent.doctor.report import FAIL, OK, Check
from agent.state.reserve import FILE_NAME as RESERVE_FILE

GIB = 1024**3
DEFAULT_MIN_FREE_BYTES = GIB
DEFAULT_MIN_FREE_RATIO = 0.05
# Below this the database cannot grow a page: the disk is full, not nearly full.
FULL_BYTES = 1024**2


def _existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_disk(config: Config, min_free: int | None) -> Check:
    """Free space on the state directory's filesystem above the threshold."""
    where = _existing(config.gateway.state_dir)
    usage = shutil.disk_usage(where)
    threshold = (
        min_free
        if min_free is not None
        else int(min(DEFAULT_MIN_FREE_BYTES, usage.total * DEFAULT_MIN_FREE_RATIO))
    )
    detail = (
        f"{format_bytes(usage.free)} free of {format_bytes(usage.total)} at {where} "
        f"(needs {format_bytes(threshold)})"
    )
    # The daemon releases its reserve file when a write finds no space; that, or no
    # room at all, is a full disk: the door records refusals only and stays locked.
    reserve_spent = (
        config.db_path.exists() and not (config.gateway.state_dir / RESERVE_FILE).exists()
    )
    if usage.free < FULL_BYTES or reserve_spent:
        return Check(
            "disk",
            FAIL,
            f"disk full: {detail}" + ("; the daemon has used its reserve" if reserve_spent else ""),
            "doors record refusals only and stay locked until space returns: free space "
            "(journalctl --vacuum-size=100M, remove old files) or grow the disk; the daemon "
            "takes its reserve back by itself",
        )
    if usage.free < threshold:
        return Check(
            "disk",
            FAIL,
            f"disk nearly full: {detail}",
            "free space (journalctl --vacuum-size=100M, remove old files) or grow the disk; "
            "the outbox keeps records here while the link is down",
        )
    return Check("disk", OK, detail)

"""Platform contact and the clock, from the daemon or else the database (read-only)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from typing import Any

from agent.config.schema import Config
from agent.doctor.report import FAIL, OK, SKIP, Check, format_age
from agent.state.clock import BACKWARD_ALERT_S

CLOCK_MAX_BEHIND_S = BACKWARD_ALERT_S


def _read_db(
    config: Config, query: str, params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]] | None:
    """Rows of a read-only query on the gateway's database, or None if it cannot be read."""
    path = config.db_path
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error:
        return None
    try:
        return list(conn.execute(query, params).fetchall())
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _meta(config: Config, key: str) -> float | None:
    rows = _read_db(config, "SELECT value FROM meta WHERE key = ?", (key,))
    if not rows:
        return None
    try:
        return float(rows[0][0])
    except (TypeError, ValueError):
        return None


def check_platform_contact(
    config: Config, status: dict[str, Any] | None, max_age_s: float, now: float
) -> Check:
    """The platform has been heard from (any verified command, sync.ack included) recently.

    ``ping`` goes from the platform to the gateway, so the gateway cannot send
    one; a recent verified command shows the platform reaches this gateway.
    """
    if status is not None:
        last = (status.get("clock") or {}).get("last_contact")
        source = "daemon"
    else:
        last = _meta(config, "platform_last_contact")
        source = "database"
    fix_registered = (
        "check the gateway is registered at the platform (`lockgw keys show` gives the "
        "fingerprint) and that the platform pings it; check the broker check above"
    )
    if last is None:
        if status is None and not config.db_path.exists():
            return Check("platform contact", SKIP, "no database yet: the daemon has never run")
        return Check(
            "platform contact", FAIL, "the platform has never been heard from", fix_registered
        )
    age = max(0.0, now - float(last))
    if age > max_age_s:
        return Check(
            "platform contact",
            FAIL,
            f"the platform has not sent anything for {format_age(age)} "
            f"(limit {format_age(max_age_s)})",
            fix_registered,
        )
    return Check("platform contact", OK, f"last verified command {format_age(age)} ago ({source})")


def check_ntp(run: Callable[..., Any] = subprocess.run) -> Check:
    """``timedatectl show -p NTPSynchronized``: yes is OK; skipped where it is unusable."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return Check("clock sync", SKIP, "timedatectl is not installed (no systemd)")
    try:
        done = run(
            [exe, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("clock sync", SKIP, f"timedatectl did not answer: {exc}")
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[0]
        return Check("clock sync", SKIP, f"timedatectl is not usable here: {why}")
    value = done.stdout.strip()
    if value == "yes":
        return Check("clock sync", OK, "NTP synchronised")
    return Check(
        "clock sync",
        FAIL,
        f"NTP not synchronised (NTPSynchronized={value or '?'})",
        "timedatectl set-ntp true; make sure chrony or systemd-timesyncd reaches its servers "
        "(UDP 123)",
    )


def check_clock(config: Config, status: dict[str, Any] | None, now: float) -> Check:
    """The system clock against trusted time (platform-signed ``ts``) and command ``exp``."""
    if status is not None:
        behind = float((status.get("clock") or {}).get("system_behind_s") or 0.0)
        source = "daemon"
    else:
        mark = _meta(config, "clock_high_water")
        if mark is None:
            return Check("clock", SKIP, "no trusted time recorded yet (the daemon has not run)")
        behind = max(0.0, mark - now)
        source = "database"
    fix_clock = (
        "set the clock right: check NTP (timedatectl status, chronyc sources); grants are "
        "judged by the later, trusted time meanwhile"
    )
    if behind > CLOCK_MAX_BEHIND_S:
        return Check(
            "clock",
            FAIL,
            f"system clock is {behind:.0f} s behind trusted time (the platform's signed ts)",
            fix_clock,
        )
    rows = _read_db(
        config,
        "SELECT type, exp, received_at FROM link_commands ORDER BY received_at DESC LIMIT 1",
    )
    if rows:
        kind, exp, received = rows[0]
        late = float(received) - float(exp)
        if late > 0:
            return Check(
                "clock",
                FAIL,
                f"the platform's last command ({kind}) arrived {late:.0f} s past its exp by this "
                "clock: the system clock is ahead of the platform's (or the command waited that "
                "long at the broker)",
                fix_clock,
            )
    return Check("clock", OK, f"system clock {behind:.0f} s behind trusted time ({source})")

"""The running daemon: its status over the control socket, and why checks skip without it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config.schema import Config
from agent.doctor.report import FAIL, OK, Check
from agent.runtime.control import ControlError, call

START_DAEMON = "start it with systemctl start lockgw"

StatusGetter = Callable[[Path, float], dict[str, Any]]


def daemon_status(path: Path, timeout: float) -> dict[str, Any]:
    """The daemon's ``status`` answer (the default :data:`StatusGetter`)."""
    result = call(path, "status", timeout=timeout)
    if not isinstance(result, dict):
        raise ControlError("the daemon's status answer is not an object")
    return result


def check_daemon(
    config: Config, get_status: StatusGetter, timeout: float
) -> tuple[Check, dict[str, Any] | None]:
    """The daemon answers on its control socket; its live status."""
    path = config.gateway.control_socket
    try:
        status = get_status(path, timeout)
    except ControlError as exc:
        text = str(exc)
        if "not running" in text:
            fix = f"{START_DAEMON}; journalctl -u lockgw shows why it stopped"
        elif "permission" in text:
            fix = "run doctor as root or as a member of the lockgw group"
        else:
            fix = "the daemon is stuck: journalctl -u lockgw, then systemctl restart lockgw"
        return Check("daemon", FAIL, text, fix), None
    stale = (status.get("daemon") or {}).get("stale_loops") or []
    if stale:
        return (
            Check(
                "daemon",
                FAIL,
                f"running but these loops stopped beating: {', '.join(map(str, stale))}",
                "systemctl restart lockgw; report the journal (journalctl -u lockgw)",
            ),
            status,
        )
    uptime = status.get("uptime_s", 0)
    return Check("daemon", OK, f"running {status.get('version', '')}, up {uptime:.0f} s"), status


def daemon_skip_reason(daemon_check: Check) -> str:
    """Why checks that need the daemon are skipped."""
    if "not running" in daemon_check.detail:
        return f"daemon not running: {START_DAEMON}"
    return f"daemon unreachable: {daemon_check.detail}"

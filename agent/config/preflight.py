"""What ``lockgw run`` would trip over in the files a configuration names, found before it runs.

The schema checks values; this checks them against the machine: paths that
cannot be made (a parent that is a file, a state directory under ``/proc``),
a control socket path longer than a Unix socket address holds, and key files
that others may read or write. ``lockgw config check``, ``lockgw doctor`` and
the daemon's start all use it, so each names the configuration key and the fix.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from agent.config.schema import Config

# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
_VIRTUAL_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
LOCAL_KEY_NAME = "local.key"
LOCK_KEYS_NAME = "osdp-keys.json"


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the configuration key, what is wrong, and how to fix it."""

    key: str
    detail: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: {self.detail} (fix: {self.fix})"


def path_problems(config: Config) -> list[Problem]:
    """Paths the daemon must create or bind that it could not."""
    problems: list[Problem] = []
    sock = config.gateway.control_socket
    size = len(str(sock).encode())
    if size > MAX_SOCKET_PATH_BYTES:
        problems.append(
            Problem(
                "gateway.control_socket",
                f"{sock} is {size} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH_BYTES}",
                "choose a shorter path, e.g. /run/lockgw/control.sock",
            )
        )
    for key, path in (
        ("gateway.state_dir", config.gateway.state_dir),
        ("gateway.control_socket", sock.parent),
    ):
        resolved = path.resolve()
        virtual = next((r for r in _VIRTUAL_ROOTS if resolved.is_relative_to(r)), None)
        if virtual is not None:
            problems.append(
                Problem(key, f"{path} is under {virtual}, a kernel file system", "use a real disk")
            )
            continue
        blocker = _file_in_the_way(path)
        if blocker is not None:
            problems.append(
                Problem(
                    key,
                    f"{blocker} is a file, so {path} cannot be a directory",
                    f"move {blocker} away or choose another path",
                )
            )
    return problems


def key_file_problems(config: Config) -> list[Problem]:
    """Key files others may read or write, and the state directory that holds them."""
    state = config.gateway.state_dir
    private = [
        ("keys.gateway_keys", config.keys.gateway_keys),
        ("gateway.state_dir", state / LOCAL_KEY_NAME),
        ("gateway.state_dir", state / LOCK_KEYS_NAME),
    ]
    if config.link.key_file is not None:
        private.append(("link.key_file", config.link.key_file))
    # Public, but trusted: whoever can write them chooses whom the gateway believes.
    trusted = [("keys.platform_keys", config.keys.platform_keys)]
    if config.link.ca_file is not None:
        trusted.append(("link.ca_file", config.link.ca_file))
    problems: list[Problem] = []
    mode = _mode(state)
    if mode is not None and mode & 0o022:
        # (Readable by others is doctor's `state dir` warning; writable lets them swap files.)
        problems.append(
            Problem(
                "gateway.state_dir",
                f"{state} has mode {mode:04o}: others can replace the database and key files",
                f"chmod 700 {state}",
            )
        )
    for key, path in private:
        mode = _mode(path)
        if mode is not None and mode & 0o077:
            problems.append(
                Problem(
                    key,
                    f"{path} has mode {mode:04o}: a private key readable or writable by others",
                    f"chmod 600 {path}",
                )
            )
    for key, path in trusted:
        mode = _mode(path)
        if mode is not None and mode & 0o022:
            problems.append(
                Problem(
                    key,
                    f"{path} has mode {mode:04o}: others can replace what the gateway trusts",
                    f"chmod go-w {path}",
                )
            )
    return problems


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def _file_in_the_way(path: Path) -> Path | None:
    """The first existing component of ``path`` that is not a directory, if any."""
    for part in [*reversed(path.parents), path]:
        if part.exists() and not part.is_dir():
            return part
        if not part.exists():
            return None
    return None


class PreflightError(Exception):
    """The configuration names files the daemon must not, or cannot, run with."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def require_runnable(config: Config) -> None:
    """Raise :class:`PreflightError` listing every problem, if there is any."""
    problems = path_problems(config) + key_file_problems(config)
    if problems:
        raise PreflightError(problems)

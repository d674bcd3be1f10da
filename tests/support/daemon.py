"""Run ``lockgw run`` as systemd would: a notify socket, a watchdog, signals."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path


class NotifySocket:
    """A datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def receive_until(self, wanted: str, timeout: float) -> list[str]:
        """Collect messages until one contains ``wanted``; all of them so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            self.messages.append(data.decode())
            if wanted in self.messages[-1]:
                return self.messages
        raise AssertionError(f"no {wanted!r} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


def start_daemon(lockgw_cmd: list[str], config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``lockgw run`` in the background with stderr captured."""
    return subprocess.Popen(
        [*lockgw_cmd, "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def json_log_lines(stderr: str) -> list[dict[str, object]]:
    """Every stderr line parsed as JSON (fails on a line that is not)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]

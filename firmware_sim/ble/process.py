"""The BLE radio simulator as a child process, driven from this one.

Starts ``python -m firmware_sim.ble.server`` and talks to it over its stdin
and stdout (one JSON object per line); thread-safe, so the building's control
socket and a test can both use it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

# unlocking, unlocked, unlatched, unlocked (lock'n'go), unlatching
UNLOCKED_STATES = frozenset({2, 3, 5, 6, 7})


class RadioError(Exception):
    """The radio process failed or refused a request."""


class BleRadioProcess:
    """N simulated Nuki locks and the gateway's controller served as HCI over TCP."""

    def __init__(self, locks: int, *, pairing: bool = True, max_connections: int = 3) -> None:
        argv = [sys.executable, "-m", "firmware_sim.ble.server", "--locks", str(locks)]
        argv += ["--max-connections", str(max_connections)]
        if pairing:
            argv.append("--pairing")
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._mutex = threading.Lock()
        ready = self._read()
        self.port: int = int(ready["port"])
        self.addresses: list[str] = list(ready["locks"])

    @property
    def transport(self) -> str:
        """The gateway's ``[ble] transport``."""
        return f"tcp-client:127.0.0.1:{self.port}"

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RadioError(f"the BLE radio exited ({self._proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def request(self, **op: Any) -> dict[str, Any]:
        """Send one control request (see firmware_sim.ble.server); its answer."""
        with self._mutex:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(op) + "\n")
            self._proc.stdin.flush()
            answer = self._read()
        if "error" in answer:
            raise RadioError(answer["error"])
        return answer

    def lock_state(self, index: int) -> dict[str, Any]:
        locks: list[dict[str, Any]] = self.request(op="status")["locks"]
        return locks[index]

    def unlocked(self, index: int) -> bool:
        return int(self.lock_state(index)["lock_state"]) in UNLOCKED_STATES

    def wait_unlocked(self, index: int, unlocked: bool, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.unlocked(index) == unlocked:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

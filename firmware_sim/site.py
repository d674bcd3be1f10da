"""A simulated building with a real gateway daemon attached: for the demo and end-to-end tests.

The building (``firmware_sim.building``) plays every device and the platform;
the gateway is the real ``lockgw run`` in its own process, configured for the
building, with its own keys registered at the simulated platform and, with the
secure channel on, its locks keyed by the real ``lockgw locks keyset``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.runtime.control import ControlError, call
from firmware_sim.building_ctl import ServedBuilding
from firmware_sim.idcards import VirtualCard


class SiteError(Exception):
    """The simulated site could not be brought up."""


class SimulatedSite:
    """A building plus the gateway daemon serving it."""

    def __init__(
        self,
        doors: Sequence[str] = ("L101", "L102"),
        workdir: Path | None = None,
        *,
        secure_channel: bool = True,
        config_overrides: dict[str, Any] | None = None,
        ble_doors: Sequence[str] = (),
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lockgw-site-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.building = ServedBuilding(
            list(doors), workdir / "building", secure_channel=secure_channel, ble_doors=ble_doors
        )
        self.overrides = config_overrides or {}
        self.daemon: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "gateway.log"

    @property
    def config_path(self) -> Path:
        """The gateway's configuration file."""
        return self.building.config_path

    def start(self) -> SimulatedSite:
        """Start the building, register keys, start the daemon and wait until it is online."""
        self.building.start()
        self.building.write_gateway_config(**self.overrides)
        self.building.init_gateway_keys()
        if self.building.secure_channel:
            self.building.provision_lock_keys()
        self.building.pair_ble_locks()
        self.start_daemon()
        return self

    def start_daemon(self, timeout: float = 90.0) -> None:
        """``lockgw run`` for the building; returns once it answers and the platform sees it."""
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        log = self.log_path.open("ab")
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "agent.cli.main", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise SiteError(
                    f"the gateway daemon exited with {self.daemon.returncode}; see {self.log_path}"
                )
            try:
                status = self.gateway_status()
                face_ready = status["face"] is None or status["face"]["ready"]
                if status["link"]["connected"] and face_ready:
                    return
            except ControlError:
                pass
            time.sleep(0.2)
        raise SiteError(f"the gateway did not come online within {timeout:.0f} s")

    def present(self, door: str, card: VirtualCard, face: Path | None) -> int:
        """Someone with ``face`` (None: nobody) presents ``card`` at ``door`` once the door
        has relocked; returns the platform's last seq before, to look for what follows."""
        building = self.building
        building.remove_card(door)
        building.show_face(door, face)
        building.wait_relay(door, False, timeout=30)
        time.sleep(0.8)  # two find polls without a card: the next touch is a new presentation
        mark = int(building.platform.last_seq)
        building.present_card(door, card)
        return mark

    def gateway_status(self) -> dict[str, Any]:
        """The daemon's live status over its control socket."""
        result = call(self.building.gateway_socket_path, "status", timeout=10)
        assert isinstance(result, dict)
        return result

    def wait_templates_ready(self, timeout: float = 20.0) -> bool:
        """Wait until the daemon has a face template for every guest with a grant photo
        (grants arrive ahead of guests: a guest faster than the enrolment waits at the door)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gateway_status().get("grants", {}).get("templates_pending", 1) == 0:
                return True
            time.sleep(0.2)
        return False

    def stop_daemon(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Stop the daemon (SIGTERM by default; SIGKILL to simulate power loss)."""
        if self.daemon is None:
            return None
        if self.daemon.poll() is None:
            self.daemon.send_signal(sig)
            try:
                self.daemon.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        code = self.daemon.returncode
        self.daemon = None
        return code

    def stop(self) -> None:
        """Stop the daemon and the building; remove the temporary work dir."""
        try:
            self.stop_daemon()
        finally:
            self.building.stop()
            if self._tmp is not None:
                self._tmp.cleanup()

    def __enter__(self) -> SimulatedSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

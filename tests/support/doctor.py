"""A simulated building whose gateway link runs over TLS with a client certificate.

The building's own broker is plain TCP, so this starts a private Mosquitto with
two listeners: plain TCP for the platform simulator (it connects directly) and
TLS with ``require_certificate`` for the gateway, with a test PKI from
``tests.support.mqtt`` (a :class:`~firmware_sim.broker.MosquittoBroker` with its own
configuration). The broker can be stopped (broker down) and restarted
trusting another CA (the gateway's certificate rejected).
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from firmware_sim.broker import MosquittoBroker, free_port
from firmware_sim.building import DEFAULT_GATEWAY_ID
from firmware_sim.building_ctl import ServedBuilding
from firmware_sim.polling import wait_until
from firmware_sim.site import SimulatedSite
from tests.support.mqtt import Pki, make_pki

GATEWAY_CN = f"gw-{DEFAULT_GATEWAY_ID}"
REPO = Path(__file__).resolve().parents[2]


class TlsSite:
    """SimulatedSite + a two-listener Mosquitto; the daemon's link uses TLS."""

    def __init__(self, workdir: Path, doors: tuple[str, ...] = ("L101", "L102")) -> None:
        self.workdir = workdir
        self.pki: Pki = make_pki(workdir / "pki", [GATEWAY_CN])
        self.other_pki: Pki = make_pki(workdir / "pki-other", [GATEWAY_CN])
        self.plain_port, self.tls_port = free_port(), free_port()
        self.broker = MosquittoBroker(
            workdir, self.plain_port, config=self._broker_conf(self.pki.ca)
        )
        cert, key = self.pki.clients[GATEWAY_CN]
        link = {
            "transport": "tls",
            "host": "127.0.0.1",
            "port": self.tls_port,
            "ca_file": self.pki.ca,
            "cert_file": cert,
            "key_file": key,
        }
        self.site = SimulatedSite(
            doors, workdir / "site", secure_channel=True, config_overrides={"link": link}
        )
        # The site's building must use our broker (the platform on its plain listener).
        self.site.building = ServedBuilding(
            list(doors),
            workdir / "site" / "building",
            secure_channel=True,
            broker=("127.0.0.1", self.plain_port),
        )

    def _broker_conf(self, client_ca: Path) -> str:
        return (
            "per_listener_settings false\n"
            "allow_anonymous true\n"
            "persistence false\n"
            f"user {getpass.getuser()}\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
            f"listener {self.plain_port} 127.0.0.1\n"
            f"listener {self.tls_port} 127.0.0.1\n"
            f"cafile {client_ca}\n"
            f"certfile {self.pki.server_cert}\n"
            f"keyfile {self.pki.server_key}\n"
            "require_certificate true\n"
        )

    @property
    def config_path(self) -> Path:
        return self.site.config_path

    def start(self) -> TlsSite:
        self.broker.start()
        try:
            self.site.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        try:
            self.site.stop()
        finally:
            self.broker.stop()

    def restart_broker(self, client_ca: Path | None = None) -> None:
        """Restart the broker, trusting ``client_ca`` for client certificates (default ours)."""
        self.broker.stop()
        self.broker.config = self._broker_conf(client_ca or self.pki.ca)
        self.broker.start()

    def status(self) -> dict[str, Any]:
        return self.site.gateway_status()

    def wait_status(self, predicate: Any, timeout: float = 60.0) -> bool:
        """Wait until the daemon's live status satisfies ``predicate``."""

        def ok() -> bool:
            try:
                return bool(predicate(self.status()))
            except Exception:
                return False

        return wait_until(ok, timeout, interval=0.3)

    def lock_entry(self, status: dict[str, Any], address: int) -> dict[str, Any]:
        return next(e for e in status["locks"]["bus0"] if e["address"] == address)


def run_doctor(
    config: Path, *extra: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``lockgw doctor`` as a user runs it (a subprocess of the installed entry point)."""
    exe = Path(sys.executable).with_name("lockgw")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "agent.cli.main"]
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    return subprocess.run(
        [*cmd, "doctor", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def doctor_json(config: Path, *extra: str) -> tuple[int, dict[str, dict[str, str]]]:
    """Exit code and the checks by name from ``doctor --json``."""
    done = run_doctor(config, "--json", *extra)
    assert not done.stderr.strip() or done.returncode != 0, done.stderr
    data = json.loads(done.stdout)
    assert data["exit_code"] == done.returncode
    return done.returncode, {c["name"]: c for c in data["checks"]}


def failures(checks: dict[str, dict[str, str]]) -> list[str]:
    """Names of the checks that failed."""
    return [name for name, c in checks.items() if c["status"] == "FAIL"]

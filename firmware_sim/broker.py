"""A private Mosquitto for simulations and tests: plain TCP on loopback, anonymous.

``MosquittoBroker(workdir).start()`` writes ``<workdir>/mosquitto.conf``, runs
``mosquitto -c`` on a free 127.0.0.1 port and waits until it accepts
connections. :meth:`kill9` is a crash (SIGKILL, nothing saved); :meth:`start`
again brings it back on the same port. Not for production: no TLS, no ACL by
default; tests of those pass their own configuration text (``config``).
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DEFAULT_BINARY = "/usr/sbin/mosquitto"


class BrokerError(Exception):
    """Mosquitto is missing or did not start."""


def find_mosquitto() -> str | None:
    """The mosquitto executable, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return DEFAULT_BINARY if Path(DEFAULT_BINARY).exists() else None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on (host, port)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def loopback_conf(port: int, workdir: Path, *, host: str = "127.0.0.1", persist: bool) -> str:
    """The configuration text: one plain listener, anonymous clients, no queue limits."""
    lines = [
        f"listener {port} {host}",
        "allow_anonymous true",
        # Keep the current user when started as root (mosquitto would switch to 'mosquitto').
        f"user {getpass.getuser()}",
        "max_queued_messages 0",
        "max_inflight_messages 0",
        f"log_dest file {workdir / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if persist:
        lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1"]
    else:
        lines.append("persistence false")
    return "\n".join(lines) + "\n"


class MosquittoBroker:
    """One private mosquitto process; ``persist=True`` keeps sessions across restarts.

    ``config``, when given, is the configuration text run instead of the loopback
    one (TLS, an ACL, several listeners); it must listen on ``host:port``, where
    readiness is checked. It may be changed between :meth:`stop` and :meth:`start`.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        persist: bool = False,
        binary: str | None = None,
        config: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_port(host)
        self.persist = persist
        self.config = config
        self._binary = binary or find_mosquitto()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) clients connect to."""
        return self.host, self.port

    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self, timeout: float = 10.0) -> None:
        """Write the configuration, start mosquitto, wait until it accepts connections."""
        if self.running:
            return
        if not self._binary or not (shutil.which(self._binary) or Path(self._binary).is_file()):
            raise BrokerError(
                f"mosquitto is not installed ({self._binary or 'not on PATH'}; "
                "apt-get install mosquitto)"
            )
        if accepts(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is in use by another server")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.config is None:
            text = loopback_conf(self.port, self.workdir, host=self.host, persist=self.persist)
        else:
            text = self.config
        self.conf_path.write_text(text, encoding="utf-8")
        self._proc = subprocess.Popen(
            [self._binary, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise BrokerError(
                    f"mosquitto exited with {code} at start (port {self.port} in use? "
                    f"see {self.log_path})"
                )
            if accepts(self.host, self.port):
                return
            time.sleep(0.05)
        self.kill9()
        raise BrokerError(f"mosquitto did not accept connections on port {self.port}")

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate cleanly (SIGTERM; SIGKILL if it hangs)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def kill9(self) -> None:
        """Crash the broker: SIGKILL, no clean shutdown, nothing saved since the last autosave."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop (cleanly) and start again on the same port."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

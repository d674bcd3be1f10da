"""systemd's notification protocol (sd_notify) with the standard library only."""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, … to ``$NOTIFY_SOCKET``.

    Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the daemon
    runs the same in a terminal, in tests and under the service manager.
    """

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        if address:
            # A leading '@' names a socket in the abstract namespace.
            self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; False when nobody listens or it failed."""
        if self._address is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto("\n".join(assignments).encode(), self._address)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """The daemon has finished starting."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        """Keep-alive ping for ``WatchdogSec=``."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """The daemon has begun shutting down."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self.notify(f"STATUS={text}")

    def close(self) -> None:
        """Release the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, or None when no watchdog is set for us."""
    env = environ if environ is not None else dict(os.environ)
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2 / 1_000_000 if value > 0 else None

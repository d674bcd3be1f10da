"""A serial QR scanner module on a pty: tests and the building show it codes.

Like the ID reader simulator, the driver opens a stable symlink (a udev name)
that points at the current pty slave; :meth:`QrScannerSimulator.unplug` closes
the pty (the driver's reads fail) and :meth:`replug` makes a new one. The module
only talks: :meth:`show` writes a code's text and the configured terminator, and
:meth:`send_raw` writes any bytes (half lines, garbage) for fault tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import tty
from pathlib import Path

from firmware_sim.ptylink import point_link


class QrScannerSimulator:
    """A QR scanner module that writes what it 'sees' to a pty."""

    def __init__(self, terminator: bytes = b"\r\n", name: str = "ttyQR0") -> None:
        self.terminator = terminator
        self._dir = Path(tempfile.mkdtemp(prefix="qrscanner-"))
        self._link = self._dir / name
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self.shown = 0

    @property
    def port_path(self) -> str:
        """The stable path the driver opens."""
        return str(self._link)

    def start(self) -> str:
        """Create the pty and return :attr:`port_path`."""
        with self._lock:
            self._open_pty()
        return self.port_path

    def stop(self) -> None:
        """Close the pty and remove the link directory."""
        with self._lock:
            self._close_pty()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> QrScannerSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def show(self, text: str) -> None:
        """A code held before the scanner: its text and the terminator."""
        self.send_raw(text.encode("utf-8") + self.terminator)
        self.shown += 1

    def send_raw(self, data: bytes) -> None:
        """Write bytes as the module would (partial lines, noise)."""
        with self._lock:
            if self._master is None:
                raise ConnectionError("the scanner is unplugged")
            view = memoryview(data)
            while view:
                written = os.write(self._master, view)
                view = view[written:]

    def unplug(self) -> None:
        """Close the pty as if the USB adapter were pulled."""
        with self._lock:
            self._close_pty()

    def replug(self) -> None:
        """Make a new pty and point the link at it."""
        with self._lock:
            if self._master is None:
                self._open_pty()

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        self._master, self._slave = master, slave
        point_link(self._link, slave)

    def _close_pty(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._link.unlink()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

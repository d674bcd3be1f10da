"""A QR scanner module on a serial port (pyserial): a thread that reads lines and
reports codes, and survives the port vanishing and coming back.

The module only talks: it sends a code's text and a terminator when a code is in
front of it. The thread reads what arrives, feeds :class:`ScannerDecoder`, drops
a half line after ``line_timeout_s`` of silence, and hands every code and every
refused line to the callbacks. A port that fails is closed and reopened every
``reopen_interval_s``; the state changes (lost, recovered) are reported once each.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import serial

from drivers.qr.codec import QrTextError, Scanned, ScannerDecoder, ScanRefused

log = logging.getLogger(__name__)

_READ_SLICE_S = 0.05


class ScannerPort(Protocol):
    """What the scanner needs of a ``serial.Serial``."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def close(self) -> None: ...


def open_scanner_port(port: str, baud: int) -> ScannerPort:
    """Open ``port`` 8N1, exclusively, with a short read slice."""
    return serial.Serial(port, baudrate=baud, timeout=_READ_SLICE_S, exclusive=True)


class ScannerState(enum.Enum):
    """Connection state of a scanner."""

    STARTING = "starting"
    CONNECTED = "connected"
    PORT_UNAVAILABLE = "port_unavailable"
    PORT_LOST = "port_lost"
    RECOVERED = "recovered"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ScannerStatus:
    """A change of scanner state."""

    state: ScannerState
    port: str
    detail: str


class QrScanner:
    """Reads one serial QR scanner module in a thread."""

    def __init__(
        self,
        port: str,
        on_code: Callable[[str], None],
        on_status: Callable[[ScannerStatus], None] | None = None,
        on_refused: Callable[[QrTextError], None] | None = None,
        *,
        baud: int = 9600,
        line_timeout_s: float = 0.5,
        reopen_interval_s: float = 0.5,
        opener: Callable[[str, int], ScannerPort] = open_scanner_port,
    ) -> None:
        self.port = port
        self._on_code = on_code
        self._on_status = on_status
        self._on_refused = on_refused
        self._baud = baud
        self._line_timeout = line_timeout_s
        self._reopen = reopen_interval_s
        self._opener = opener
        self.decoder = ScannerDecoder()
        self.counters: dict[str, int] = {"port_losses": 0, "reconnects": 0}
        self._state = ScannerState.STARTING
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._serial: ScannerPort | None = None
        self._was_connected = False

    @property
    def state(self) -> ScannerState:
        """The current connection state."""
        return self._state

    @property
    def running(self) -> bool:
        """True while the thread is alive (including while the port is away)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the reading thread."""
        if self._thread is not None:
            raise RuntimeError("scanner already started")
        self._thread = threading.Thread(target=self._run, name=f"qr:{self.port}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the thread and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()
        self._set_state(ScannerState.STOPPED, "stopped")

    def _run(self) -> None:
        last_byte = time.monotonic()
        while not self._stop.is_set():
            if self._serial is None:
                if not self._connect():
                    self._stop.wait(self._reopen)
                    continue
                last_byte = time.monotonic()
            port = self._serial
            assert port is not None
            try:
                data = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError, TypeError) as exc:
                # pyserial raises TypeError from in_waiting on a closed/vanished fd.
                self.counters["port_losses"] += 1
                self._close()
                self.decoder.expire()
                self._set_state(ScannerState.PORT_LOST, f"read failed: {exc}")
                continue
            now = time.monotonic()
            if data:
                last_byte = now
                self._deliver(self.decoder.feed(data))
            elif self.decoder.pending and now - last_byte >= self._line_timeout:
                self._deliver(self.decoder.expire())

    def _deliver(self, events: list[Scanned | ScanRefused]) -> None:
        for event in events:
            try:
                if isinstance(event, Scanned):
                    self._on_code(event.text)
                else:
                    log.warning("QR scanner %s: line refused: %s", self.port, event.error)
                    if self._on_refused is not None:
                        self._on_refused(event.error)
            except Exception:  # a bug in a callback must not kill the scanner
                log.exception("QR scanner callback failed")

    def _connect(self) -> bool:
        try:
            self._serial = self._opener(self.port, self._baud)
        except (serial.SerialException, OSError) as exc:
            if self._state not in (ScannerState.PORT_LOST, ScannerState.PORT_UNAVAILABLE):
                self._set_state(ScannerState.PORT_UNAVAILABLE, f"cannot open port: {exc}")
            return False
        recovered = self._was_connected
        self._was_connected = True
        if recovered:
            self.counters["reconnects"] += 1
        self._set_state(
            ScannerState.RECOVERED if recovered else ScannerState.CONNECTED,
            "port reopened" if recovered else "port open",
        )
        return True

    def _close(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None

    def _set_state(self, state: ScannerState, detail: str) -> None:
        if state is self._state:
            return
        self._state = state
        log.info("QR scanner %s: %s (%s)", self.port, state.value, detail)
        if self._on_status is not None:
            try:
                self._on_status(ScannerStatus(state, self.port, detail))
            except Exception:
                log.exception("QR scanner status callback failed")

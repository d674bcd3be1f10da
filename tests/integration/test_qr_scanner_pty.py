"""The serial QR scanner driver against a simulated module on a real pty."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from drivers.qr.codec import QrProblem, QrTextError
from drivers.qr.scanner import QrScanner, ScannerState, ScannerStatus
from firmware_sim.qrscanner import QrScannerSimulator
from tests.support.idcard import wait_for

CODE = "CTID1.AAECAwQFBgcICQoLDA0ODw.c2lnbmF0dXJl"


@dataclass
class Seen:
    codes: list[str] = field(default_factory=list)
    refused: list[QrTextError] = field(default_factory=list)
    states: list[ScannerState] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_status(self, status: ScannerStatus) -> None:
        with self.lock:
            self.states.append(status.state)


@pytest.fixture
def rig() -> Iterator[tuple[QrScannerSimulator, QrScanner, Seen]]:
    sim = QrScannerSimulator()
    port = sim.start()
    seen = Seen()
    scanner = QrScanner(
        port,
        seen.codes.append,
        seen.on_status,
        seen.refused.append,
        line_timeout_s=0.2,
        reopen_interval_s=0.1,
    )
    scanner.start()
    try:
        wait_for(lambda: ScannerState.CONNECTED in seen.states, 5, "scanner connected")
        yield sim, scanner, seen
    finally:
        scanner.stop()
        sim.stop()


def test_codes_shown_to_the_module_reach_the_gateway(rig) -> None:  # type: ignore[no-untyped-def]
    sim, _scanner, seen = rig
    sim.show(CODE)
    sim.terminator = b"\r"
    sim.show("second-code")
    wait_for(lambda: len(seen.codes) == 2, 5, "two codes")
    assert seen.codes == [CODE, "second-code"]


def test_a_half_line_then_silence_is_refused_and_the_next_code_is_clean(rig) -> None:  # type: ignore[no-untyped-def]
    sim, scanner, seen = rig
    sim.send_raw(b"CTID1.trunc")
    wait_for(lambda: len(seen.refused) == 1, 5, "the half line refused")
    assert seen.refused[0].problem is QrProblem.PARTIAL_LINE
    sim.show(CODE)
    wait_for(lambda: len(seen.codes) == 1, 5, "the next code")
    assert seen.codes == [CODE]
    assert scanner.decoder.counters["refused_partial_line"] == 1


def test_garbage_on_the_wire_is_refused_and_counted(rig) -> None:  # type: ignore[no-untyped-def]
    sim, scanner, seen = rig
    sim.send_raw(b"\x00\x1b[2J\xff\xfe\r\n")
    sim.show(CODE)
    wait_for(lambda: len(seen.codes) == 1, 5, "the code after the garbage")
    assert [e.problem for e in seen.refused] == [QrProblem.NOT_UTF8]
    assert scanner.decoder.counters["refused"] == 1


def test_the_scanner_vanishes_and_returns(rig) -> None:  # type: ignore[no-untyped-def]
    sim, scanner, seen = rig
    sim.unplug()
    wait_for(lambda: ScannerState.PORT_LOST in seen.states, 5, "port lost reported")
    assert scanner.running
    sim.replug()
    wait_for(lambda: ScannerState.RECOVERED in seen.states, 5, "recovered reported")
    sim.show(CODE)
    wait_for(lambda: seen.codes == [CODE], 5, "a code after the return")
    assert scanner.counters["port_losses"] == 1
    assert scanner.counters["reconnects"] == 1

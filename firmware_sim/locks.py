"""Simulated OSDP door locks: N libosdp peripheral devices on one pseudo-terminal.

The gateway's driver opens the pty's slave side (through a stable symlink, the
way udev names a USB adapter); the simulator holds the master side and plays a
multi-drop RS-485 bus: a reader thread hands every byte to every lock, each
lock's libosdp PD keeps only the frames for its own address, and replies are
written back one at a time. One service thread refreshes all PDs and runs the
relay timers.

Each lock has a relay on output 0 (locked / unlocked, with a timer), a door
contact on input 0 (0 closed, 1 open) that tests open and close, a tamper
switch (reported in the local status), a keypad and a card reader, and the
last LED and buzzer commands. Faults: power loss (stops answering, reboots on
power-up with its stored key), line noise (random bytes, either direction),
slow responses (delayed replies), and unplugging the whole adapter.
"""

from __future__ import annotations

import contextlib
import os
import pty
import random
import select
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import osdp
import osdp_sys

from firmware_sim.ptylink import point_link

log_level_quiet = osdp.LogLevel.Emergency

# OSDP output control codes (osdp_OUT), spec table "Output Control Codes".
_OUT_PERM_OFF_ABORT = 1
_OUT_PERM_ON_ABORT = 2
_OUT_PERM_OFF = 3
_OUT_PERM_ON = 4
_OUT_TEMP_ON = 5
_OUT_TEMP_OFF = 6

_SERVICE_PERIOD_S = 0.002


@dataclass
class RelayChange:
    """One switch of a lock's relay, as the simulated hardware saw it."""

    at: float  # time.monotonic()
    unlocked: bool


@dataclass
class LockRecord:
    """What a test can observe about one simulated lock."""

    relay_changes: list[RelayChange] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    led: dict[str, Any] | None = None
    buzzer: dict[str, Any] | None = None
    keysets: int = 0


class _PdChannel(osdp.Channel):
    """A lock's view of the shared bus: an inbox fed by the reader, writes to the pty."""

    def __init__(self, bus: SimBus, lock: SimLock) -> None:
        super().__init__()
        self._bus = bus
        self._lock = lock
        self._inbox = bytearray()
        self._mutex = threading.Lock()

    def feed(self, data: bytes) -> None:
        with self._mutex:
            self._inbox += data
            if len(self._inbox) > 4096:  # a dead PD must not grow without bound
                del self._inbox[:-1024]

    def clear(self) -> None:
        with self._mutex:
            self._inbox.clear()

    def read(self, max_bytes: int) -> bytes:
        with self._mutex:
            data = bytes(self._inbox[:max_bytes])
            del self._inbox[:max_bytes]
        return data

    def write(self, buf: bytes) -> int:
        if not self._lock.powered:
            return len(buf)
        delay = self._lock.reply_delay_s
        if delay > 0:
            time.sleep(delay)
        self._bus.transmit(bytes(buf))
        return len(buf)

    def flush(self) -> None:
        self.clear()


class SimLock:
    """One OSDP lock on the simulated bus. All methods are thread-safe."""

    def __init__(
        self,
        bus: SimBus,
        address: int,
        scbk: bytes | None,
        *,
        install_mode: bool = False,
        secure: bool = True,
    ) -> None:
        self.bus = bus
        self.address = address
        self.scbk = scbk
        self.install_mode = install_mode or scbk is None
        self.secure = secure
        self.powered = True
        self.reply_delay_s = 0.0
        self.record = LockRecord()
        self._mutex = threading.RLock()
        self._unlocked = False
        self._perm_unlocked = False
        self._relock_at: float | None = None
        self._contact_open = False
        self._tamper = False
        self._was_online = False
        self._channel = _PdChannel(bus, self)
        self._ctx: Any = self._make_pd()

    # ---------------------------------------------------------------- libosdp
    def _make_pd(self) -> Any:
        flags = []
        if self.install_mode:
            flags.append(osdp.LibFlag.InstallMode)
        if self.secure and self.scbk is not None:
            flags.append(osdp.LibFlag.EnforceSecure)
        caps = [
            (osdp.Capability.ContactStatusMonitoring, 1, 1),
            (osdp.Capability.OutputControl, 1, 1),
            (osdp.Capability.LEDControl, 1, 1),
            (osdp.Capability.AudibleControl, 1, 1),
            (osdp.Capability.CardDataFormat, 1, 1),
        ]
        if self.secure:
            caps.append((osdp.Capability.CommunicationSecurity, 1, 1))
        info = osdp.PDInfo(
            self.address,
            self._channel,
            scbk=self.scbk,
            name=f"lock-{self.address}",
            flags=flags,
        )
        ctx = osdp_sys.PeripheralDevice(info.get(), capabilities=osdp.PDCapabilities(caps).get())
        ctx.set_command_callback(self._on_command)
        return ctx

    def _on_command(self, cmd: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        with self._mutex:
            self.record.commands.append(dict(cmd))
            kind = cmd.get("command")
            if kind == osdp.Command.Output:
                return self._on_output(cmd), None
            if kind == osdp.Command.LED:
                self.record.led = dict(cmd)
            elif kind == osdp.Command.Buzzer:
                self.record.buzzer = dict(cmd)
            elif kind == osdp.Command.Keyset:
                # libosdp switches its own session key; remember it as "flash".
                self.scbk = bytes(cmd["data"])
                self.install_mode = False
                self.record.keysets += 1
            elif kind == osdp.Command.Status:
                return 0, self._status_reply(int(cmd.get("type", -1)))
        return 0, None

    def _status_reply(self, kind: int) -> dict[str, Any] | None:
        if kind == osdp.StatusReportType.Input:
            report = bytes([int(self._contact_open)])
        elif kind == osdp.StatusReportType.Local:
            report = bytes([int(self._tamper), 0])
        elif kind == osdp.StatusReportType.Output:
            report = bytes([int(self._unlocked)])
        else:
            return None
        return {
            "command": osdp.Command.Status,
            "type": kind,
            "nr_entries": len(report),
            "report": report,
        }

    def _on_output(self, cmd: dict[str, Any]) -> int:
        if cmd.get("output_no") != 0:
            return -1
        code = cmd.get("control_code")
        now = time.monotonic()
        if code in (_OUT_PERM_OFF_ABORT, _OUT_PERM_OFF):
            self._perm_unlocked = False
            self._relock_at = None
            self._set_relay(False, now)
        elif code in (_OUT_PERM_ON_ABORT, _OUT_PERM_ON):
            self._perm_unlocked = True
            self._relock_at = None
            self._set_relay(True, now)
        elif code == _OUT_TEMP_ON:
            self._relock_at = now + int(cmd.get("timer_count", 0)) / 10.0
            self._set_relay(True, now)
        elif code == _OUT_TEMP_OFF:
            self._relock_at = now + int(cmd.get("timer_count", 0)) / 10.0
            self._set_relay(False, now)
        else:
            return -1
        return 0

    def _set_relay(self, unlocked: bool, now: float) -> None:
        if unlocked != self._unlocked:
            self._unlocked = unlocked
            self.record.relay_changes.append(RelayChange(now, unlocked))

    def _service(self, now: float) -> None:
        with self._mutex:
            if self._relock_at is not None and now >= self._relock_at:
                self._relock_at = None
                self._set_relay(self._perm_unlocked, now)
            if self.powered:
                self._ctx.refresh()
                online = bool(self._ctx.is_online()) and (
                    bool(self._ctx.is_sc_active()) or not self.secure or self.scbk is None
                )
                if online and not self._was_online:
                    self._report_inputs()
                self._was_online = online

    def _report_inputs(self) -> None:
        # Like many readers, report the current inputs when a panel connects.
        self._ctx.submit_event(
            {
                "event": osdp.Event.Status,
                "type": osdp.StatusReportType.Input,
                "nr_entries": 1,
                "report": bytes([int(self._contact_open)]),
            }
        )
        if self._tamper:
            self._ctx.submit_event(
                {
                    "event": osdp.Event.Status,
                    "type": osdp.StatusReportType.Local,
                    "nr_entries": 2,
                    "report": bytes([1, 0]),
                }
            )

    def _submit(self, event: dict[str, Any]) -> None:
        with self._mutex:
            if self.powered:
                self._ctx.submit_event(event)

    # ------------------------------------------------------------ test hooks
    @property
    def unlocked(self) -> bool:
        """True while the relay holds the door unlocked."""
        with self._mutex:
            return self._unlocked

    @property
    def contact_open(self) -> bool:
        with self._mutex:
            return self._contact_open

    @property
    def tamper(self) -> bool:
        with self._mutex:
            return self._tamper

    @property
    def sc_active(self) -> bool:
        with self._mutex:
            return bool(self.powered and self._ctx.is_sc_active())

    @property
    def online(self) -> bool:
        """The lock's own view: a control panel talks to it."""
        with self._mutex:
            return bool(self.powered and self._ctx.is_online())

    def set_contact(self, is_open: bool) -> None:
        """Move the door (1 = open) and report the input change."""
        with self._mutex:
            if is_open == self._contact_open:
                return
            self._contact_open = is_open
            self._submit(
                {
                    "event": osdp.Event.Status,
                    "type": osdp.StatusReportType.Input,
                    "nr_entries": 1,
                    "report": bytes([int(is_open)]),
                }
            )

    def open_door(self) -> None:
        self.set_contact(True)

    def close_door(self) -> None:
        self.set_contact(False)

    def set_tamper(self, tampered: bool) -> None:
        """Open (True) or close the tamper switch and report the local status."""
        with self._mutex:
            if tampered == self._tamper:
                return
            self._tamper = tampered
            self._submit(
                {
                    "event": osdp.Event.Status,
                    "type": osdp.StatusReportType.Local,
                    "nr_entries": 2,
                    "report": bytes([int(tampered), 0]),
                }
            )

    def press_keys(self, keys: str) -> None:
        """Type on the keypad (digits, ``*`` and ``#``)."""
        self._submit({"event": osdp.Event.KeyPress, "reader_no": 0, "data": keys.encode("ascii")})

    def present_card(self, data: bytes, bits: int | None = None) -> None:
        """Present a card: its raw Wiegand bits (``bits`` long, default all of ``data``)."""
        self._submit(
            {
                "event": osdp.Event.CardRead,
                "reader_no": 0,
                "direction": 0,
                "format": osdp.CardFormat.Wiegand,
                "length": bits if bits is not None else len(data) * 8,
                "data": data,
            }
        )

    def power_off(self) -> None:
        """The lock loses power: it stops answering and forgets its session."""
        with self._mutex:
            self.powered = False
            self._channel.clear()
            self._relock_at = None
            self._perm_unlocked = False
            self._set_relay(False, time.monotonic())  # fail secure: no power, locked

    def power_on(self) -> None:
        """The lock boots again with the key it had stored."""
        with self._mutex:
            if self.powered:
                return
            self._channel.clear()
            self._ctx = self._make_pd()
            self._was_online = False
            self.powered = True

    def set_slow(self, delay_s: float) -> None:
        """Delay every reply by ``delay_s`` seconds (0 to stop)."""
        self.reply_delay_s = delay_s

    def wait_relay(self, unlocked: bool, timeout: float = 10.0) -> bool:
        """Wait until the relay is in the given position."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.unlocked == unlocked:
                return True
            time.sleep(0.005)
        return self.unlocked == unlocked


class SimBus:
    """A pseudo-terminal playing an RS-485 bus with simulated OSDP locks on it.

    ``link`` is the stable path (a symlink re-pointed on replug) the driver
    opens. ``baudrate`` paces the bytes as a wire at that speed would.
    """

    def __init__(self, link: Path, baudrate: int = 115200) -> None:
        self.link = Path(link)
        self.baudrate = baudrate
        self.locks: dict[int, SimLock] = {}
        self._fd_mutex = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._rx = threading.Event()
        self._threads: list[threading.Thread] = []
        self._noise_rate = 0.0
        self._rng = random.Random()
        self.tap: Callable[[str, bytes], None] | None = None
        osdp_sys.set_loglevel(log_level_quiet)

    # --------------------------------------------------------------- set-up
    def add_lock(
        self,
        address: int,
        scbk: bytes | None,
        *,
        install_mode: bool = False,
        secure: bool = True,
    ) -> SimLock:
        """Put a lock on the bus (before or after :meth:`start`)."""
        if address in self.locks:
            raise ValueError(f"address {address} already on the simulated bus")
        lock = SimLock(self, address, scbk, install_mode=install_mode, secure=secure)
        self.locks[address] = lock
        return lock

    def start(self) -> None:
        """Create the pty and start the bus threads."""
        self._plug()
        for target, name in ((self._reader, "simbus-rx"), (self._service, "simbus-pd")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()
        self._unplug()

    def __enter__(self) -> SimBus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------- adapter faults
    def _plug(self) -> None:
        master, slave = pty.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        point_link(self.link, slave)
        with self._fd_mutex:
            self._master, self._slave = master, slave

    def _unplug(self) -> None:
        with self._fd_mutex:
            master, slave = self._master, self._slave
            self._master = self._slave = None
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in (master, slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def unplug(self) -> None:
        """The USB adapter is pulled: the device node disappears."""
        self._unplug()

    def replug(self) -> None:
        """The adapter comes back (as a new pty, same stable name)."""
        if self._master is None:
            self._plug()

    # ----------------------------------------------------------- line noise
    def set_noise(self, rate: float, seed: int | None = None) -> None:
        """Corrupt each byte on the wire with probability ``rate`` (0 stops)."""
        self._noise_rate = rate
        if seed is not None:
            self._rng.seed(seed)

    def inject_noise(self, count: int, to_driver: bool = True) -> None:
        """Put ``count`` random bytes on the line toward the driver or the locks."""
        junk = bytes(self._rng.getrandbits(8) for _ in range(count))
        if to_driver:
            self._write_master(junk)
        else:
            self._deliver(junk)

    def _corrupt(self, data: bytes) -> bytes:
        if self._noise_rate <= 0:
            return data
        out = bytearray(data)
        for i in range(len(out)):
            if self._rng.random() < self._noise_rate:
                out[i] ^= 1 << self._rng.randrange(8)
        return bytes(out)

    # ------------------------------------------------------------- the wire
    def _wire_time(self, nbytes: int) -> float:
        return nbytes * 10 / self.baudrate

    def transmit(self, data: bytes) -> None:
        """A lock puts a reply on the bus (half duplex: one talker at a time)."""
        time.sleep(self._wire_time(len(data)))
        data = self._corrupt(data)
        if self.tap:
            self.tap("pd", data)
        self._write_master(data)

    def _write_master(self, data: bytes) -> None:
        with self._fd_mutex:
            fd = self._master
            if fd is None:
                return
            view = memoryview(data)
            deadline = time.monotonic() + 0.5
            while view and time.monotonic() < deadline:
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    time.sleep(0.001)
                    continue
                except OSError:
                    return
                view = view[n:]

    def _deliver(self, data: bytes) -> None:
        for lock in list(self.locks.values()):
            if lock.powered:
                lock._channel.feed(data)

    def _reader(self) -> None:
        while not self._stop.is_set():
            fd = self._master
            if fd is None:
                time.sleep(0.01)
                continue
            try:
                ready, _, _ = select.select([fd], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(fd, 1024)
            except (OSError, ValueError):
                # No reader on the other side yet (EIO) or fd closed by unplug.
                time.sleep(0.01)
                continue
            if not data:
                continue
            time.sleep(self._wire_time(len(data)))
            data = self._corrupt(data)
            if self.tap:
                self.tap("cp", data)
            self._deliver(data)
            self._rx.set()

    def _service(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for lock in list(self.locks.values()):
                lock._service(now)
            self._rx.wait(_SERVICE_PERIOD_S)
            self._rx.clear()

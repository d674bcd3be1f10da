"""One RS-485 bus of OSDP locks: libosdp in control-panel mode over pyserial.

:class:`OsdpBus` owns one serial port and up to 64 locks (addresses 0..126).
A single driver thread calls libosdp's ``refresh()``, reads what the locks
report, derives door states, keeps the port open (reopening it when a USB
adapter disappears and comes back) and calls ``on_event`` with the typed
events of :mod:`drivers.osdp.events`. Commands (unlock, feedback, keyset) may
be called from any thread; they are queued into libosdp and the driver thread
is woken at once.

Two libosdp 3.2 behaviours shape this module:

- A lock that stops answering is "probed" while libosdp still reports it
  online, so liveness is judged here from the replies seen on the wire
  (:mod:`drivers.osdp.frames`): no well-formed reply for ``offline_after_s``
  means offline.
- A lock that fails (bad key, NAK) is parked offline by libosdp for 300 s; the
  driver restarts its state machine (disable + enable) after ``retry_s``
  instead, backing off for locks whose key does not match.
- One garbled or late frame on a multi-drop bus fails an exchange (a reply
  that comes after the 200 ms window lands in the next lock's exchange as
  "invalid pd address"), and libosdp drops that lock's session. A lock that is
  back within ``offline_after_s`` was never offline for the building: the
  driver restarts it at once, counts a hiccup and reports nothing; commands
  meanwhile wait briefly for it (:meth:`OsdpBus.unlock`).

Secure channel: a lock with ``secure=True`` (the default) is set up with
libosdp's ENFORCE_SECURE flag, so a wrong key leaves it offline and reported
(:class:`~drivers.osdp.events.KeyMismatch`), never used in plain mode.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import osdp
import osdp_sys
import serial

from .doorstate import DoorStateMachine
from .events import (
    BusStatus,
    CardPresented,
    CommandFailed,
    DoorState,
    DoorStateChanged,
    KeyMismatch,
    KeypadEntry,
    LockEvent,
    LockStatusChanged,
)
from .frames import REPLY_CCRYPT, REPLY_NAK, REPLY_RMAC_I, Frame, FrameScanner

log = logging.getLogger(__name__)

MAX_LOCKS = 64
MAX_ADDRESS = 126
SCBK_BYTES = 16
# libosdp's Python binding carries the output timer in one byte of 100 ms units.
MAX_UNLOCK_S = 25.5

_OUT_TEMP_ON = 5  # osdp_OUT control code: temporary on, revert on timeout
_OUT_PERM_OFF_ABORT = 1
_NOTIFY_COMMAND = osdp_sys.EVENT_NOTIFICATION_COMMAND
_NOTIFY_SC = osdp_sys.EVENT_NOTIFICATION_SC_STATUS
_NOTIFY_PD = osdp_sys.EVENT_NOTIFICATION_PD_STATUS
_COMMAND_NAMES = {
    osdp.Command.Output: "output",
    osdp.Command.LED: "led",
    osdp.Command.Buzzer: "buzzer",
    osdp.Command.Keyset: "keyset",
}
_KEYPAD_CHARS = frozenset("0123456789*#")
# Locks report their inputs when a control panel connects; after this long
# without a report, a lock that only reports changes is taken to be closed.
_BASELINE_WAIT_S = 2.0
# A lock that answered the challenge (osdp_CCRYPT) but got no osdp_SCRYPT it
# could confirm (osdp_RMAC_I) within this time holds a different key.
_HANDSHAKE_S = 1.0
# A bus loop later than the poll interval plus this is the thread's own lateness.
_LOOP_SLACK_S = 0.25
# A lock not online and silent this long gets its libosdp state machine restarted.
_SILENT_S = 0.5
# How long an unlock waits for a lock that is restarting its session (a hiccup).
_HICCUP_WAIT_S = 1.5


class OsdpError(Exception):
    """A lock command could not be carried out."""


class LockOffline(OsdpError):
    """The lock is not online (with its secure channel, when configured)."""


class UnknownLock(OsdpError):
    """No lock with that address is configured on this bus."""


@dataclass(frozen=True)
class LockSpec:
    """One lock on the bus.

    ``scbk`` is the 16-byte secure-channel base key. ``secure=False`` allows a
    plain-text lock and must be chosen explicitly. ``install_mode`` is only for
    the technician's keyset procedure: the lock is expected to accept the
    default install key and is given ``scbk``. ``held_open_after_s`` overrides
    the bus's held-open time for this door.
    """

    address: int
    scbk: bytes | None = None
    secure: bool = True
    install_mode: bool = False
    held_open_after_s: float | None = None  # None: the bus's default

    def check(self) -> None:
        """Raise ValueError naming what is wrong with this spec."""
        if not 0 <= self.address <= MAX_ADDRESS:
            raise ValueError(f"lock address {self.address} is outside 0..{MAX_ADDRESS}")
        if self.scbk is not None and len(self.scbk) != SCBK_BYTES:
            raise ValueError(
                f"lock {self.address}: secure-channel key must be {SCBK_BYTES} bytes, "
                f"got {len(self.scbk)}"
            )
        if (self.secure or self.install_mode) and self.scbk is None:
            raise ValueError(
                f"lock {self.address}: secure channel is on but no key is stored; "
                "run `lockgw locks keyset` with the lock in install mode"
            )


@dataclass(frozen=True)
class LockState:
    """A snapshot of one lock as the driver sees it."""

    address: int
    online: bool
    sc_active: bool
    tamper: bool
    door_state: DoorState
    unlocked: bool
    key_mismatch: bool


@dataclass
class BusStats:
    """Counters; bad input is counted here and never acted on."""

    frames: int = 0
    bad_frames: int = 0
    junk_bytes: int = 0
    port_losses: int = 0
    port_reopens: int = 0
    unlocks: int = 0
    commands_failed: int = 0
    bad_events: int = 0
    key_mismatches: int = 0
    restarts: int = 0
    callback_errors: int = 0
    hiccups: int = 0  # sessions lost and back within offline_after_s (not reported offline)
    late_s: float = 0.0  # how long the bus thread itself was late (not the locks' silence)


@dataclass
class _Lock:
    spec: LockSpec
    index: int
    door: DoorStateMachine
    online: bool | None = None  # as reported: survives a hiccup shorter than offline_after_s
    ready: bool = False  # usable now: libosdp online, answering, secure channel up
    last_ready: float = float("-inf")  # on the poll clock
    in_hiccup: bool = False
    sc_active: bool = False
    tamper: bool = False
    last_reply: float = float("-inf")
    ccrypt_at: float | None = None
    failed_handshakes: int = 0
    lib_online: bool = False
    lib_sc: bool = False
    key_mismatch: bool = False
    offline_since: float = 0.0
    next_restart: float = 0.0
    restart_backoff: float = 0.0
    disabled: bool = False
    last_door: DoorState = DoorState.UNKNOWN
    baseline_until: float | None = None


class _SerialChannel(osdp.Channel):
    """libosdp's channel: the bus's serial port; errors become a port loss, not a raise."""

    def __init__(self, bus: OsdpBus) -> None:
        super().__init__()
        self._bus = bus

    def read(self, max_bytes: int) -> bytes:
        port = self._bus._serial
        if port is None:
            return b""
        try:
            data: bytes = port.read(max_bytes)
        except (serial.SerialException, OSError, TypeError) as exc:
            self._bus._port_failed(exc)
            return b""
        if data:
            self._bus._frames.extend(self._bus._scanner.feed(data))
        return data

    def write(self, buf: bytes) -> int:
        port = self._bus._serial
        if port is None:
            return len(buf)  # a dead line: the lock will not answer
        try:
            written = port.write(buf)
        except (serial.SerialException, OSError, TypeError) as exc:
            self._bus._port_failed(exc)
            return len(buf)
        return int(written or 0)

    def flush(self) -> None:
        port = self._bus._serial
        if port is None:
            return
        try:
            port.reset_input_buffer()
        except (serial.SerialException, OSError, TypeError) as exc:
            self._bus._port_failed(exc)


class OsdpBus:
    """The control panel of one OSDP bus. See the module docstring."""

    def __init__(
        self,
        port: str,
        baudrate: int,
        locks: list[LockSpec],
        on_event: Callable[[LockEvent], None],
        held_open_after_s: float = 30.0,
        *,
        offline_after_s: float = 2.0,
        retry_s: float = 1.0,
        poll_interval_s: float = 0.005,
        libosdp_log_level: int = osdp.LogLevel.Emergency,
    ) -> None:
        if not locks:
            raise ValueError("an OSDP bus needs at least one lock")
        if len(locks) > MAX_LOCKS:
            raise ValueError(f"{len(locks)} locks on one bus; at most {MAX_LOCKS} are supported")
        seen: set[int] = set()
        for spec in locks:
            spec.check()
            if spec.address in seen:
                raise ValueError(f"lock address {spec.address} appears twice on bus {port}")
            seen.add(spec.address)
        self.port = port
        self.baudrate = baudrate
        self._on_event = on_event
        self._offline_after = offline_after_s
        self._retry_s = retry_s
        self._poll_interval = poll_interval_s
        self._last_loop: float | None = None
        self._poll_time = 0.0
        self._poll_now = 0.0
        self.stats = BusStats()
        self._locks = {
            spec.address: _Lock(
                spec, i, DoorStateMachine(spec.held_open_after_s or held_open_after_s)
            )
            for i, spec in enumerate(locks)
        }
        self._by_index = {lk.index: lk for lk in self._locks.values()}
        self._scanner = FrameScanner()
        self._frames: list[Frame] = []
        self._lib_events: list[tuple[int, dict[str, Any]]] = []
        self._serial: serial.Serial | None = None
        self._port_ok: bool | None = None
        self._next_open = 0.0
        self._ctx_lock = threading.RLock()
        self._state_lock = threading.Lock()
        # A pipe, not an Event: the driver thread sleeps in select() on the port.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = 0.0
        self._last_garbage_at = float("-inf")
        osdp_sys.set_loglevel(libosdp_log_level)
        channel = _SerialChannel(self)
        infos = [self._pd_info(spec, channel).get() for spec in locks]
        self._ctx: Any = osdp_sys.ControlPanel(infos)
        self._ctx.set_event_callback(self._on_lib_event)

    @staticmethod
    def _pd_info(spec: LockSpec, channel: osdp.Channel) -> osdp.PDInfo:
        flags = [osdp.LibFlag.EnableNotification]
        if spec.install_mode:
            # Lets libosdp fall back to the install key once, to hand over spec.scbk.
            flags.append(osdp.LibFlag.InstallMode)
        elif spec.secure:
            flags.append(osdp.LibFlag.EnforceSecure)
        return osdp.PDInfo(
            spec.address,
            channel,
            scbk=spec.scbk if (spec.secure or spec.install_mode) else None,
            name=f"lock-{spec.address}",
            flags=flags,
        )

    # ---------------------------------------------------------------- life
    def start(self) -> None:
        """Open the port (retrying in the background if absent) and start polling."""
        if self._thread is not None or self._closed:
            raise RuntimeError("OSDP bus already started (a stopped bus cannot restart)")
        self._started_at = time.monotonic()
        for lock in self._locks.values():
            lock.next_restart = self._started_at + max(2.0, 0.05 * len(self._locks))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"osdp-bus:{self.port}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and close the port. Locks relock on their own timers."""
        self._stop.set()
        self._kick()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._close_port()
        if not self._closed:
            self._closed = True
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __enter__(self) -> OsdpBus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the driver thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------ commands
    def unlock(self, address: int, seconds: float) -> None:
        """Unlock for ``seconds`` (0.1 .. 25.5); the lock relocks on its own timer.

        Raises :class:`LockOffline` when the lock is not online, so the caller
        can record why the door stayed shut.
        """
        if not 0.1 <= seconds <= MAX_UNLOCK_S:
            raise ValueError(f"unlock time {seconds} s is outside 0.1..{MAX_UNLOCK_S} s")
        lock = self._online_lock(address, wait_s=_HICCUP_WAIT_S)
        with self._state_lock:
            lock.door.unlocked(time.monotonic(), seconds)
        cmd = {
            "command": osdp.Command.Output,
            "output_no": 0,
            "control_code": _OUT_TEMP_ON,
            "timer_count": round(seconds * 10),
        }
        try:
            self._submit(lock, cmd)
        except OsdpError:
            with self._state_lock:
                lock.door.relocked()
            raise
        self.stats.unlocks += 1

    def relock(self, address: int) -> None:
        """Lock now, cancelling a running unlock timer."""
        lock = self._online_lock(address)
        with self._state_lock:
            lock.door.relocked()
        self._submit(
            lock,
            {
                "command": osdp.Command.Output,
                "output_no": 0,
                "control_code": _OUT_PERM_OFF_ABORT,
                "timer_count": 0,
            },
        )

    def feedback(self, address: int, granted: bool) -> None:
        """Green LED and one beep for granted; red LED and three beeps for denied."""
        lock = self._online_lock(address)
        color = osdp.CommandLEDColor.Green if granted else osdp.CommandLEDColor.Red
        self._submit(
            lock,
            {
                "command": osdp.Command.LED,
                "reader": 0,
                "led_number": 0,
                "control_code": 1,
                "on_count": 5,
                "off_count": 0,
                "on_color": color,
                "off_color": osdp.CommandLEDColor.Black,
                "timer_count": 20,
                "temporary": True,
            },
        )
        self._submit(
            lock,
            {
                "command": osdp.Command.Buzzer,
                "reader": 0,
                "control_code": 2,
                "on_count": 2 if granted else 1,
                "off_count": 0 if granted else 1,
                "rep_count": 1 if granted else 3,
            },
        )

    def set_key(self, address: int, scbk: bytes) -> None:
        """Give an online lock a new secure-channel key (osdp_KEYSET over the channel).

        libosdp restarts the secure channel with the new key once the lock
        acknowledges it; watch :meth:`snapshot` for ``sc_active`` again.
        """
        if len(scbk) != SCBK_BYTES:
            raise ValueError(f"secure-channel key must be {SCBK_BYTES} bytes, got {len(scbk)}")
        lock = self._online_lock(address)
        if lock.spec.secure and not lock.sc_active:
            raise LockOffline(f"lock {address}: no secure channel to send a key over")
        self._submit(lock, {"command": osdp.Command.Keyset, "type": 1, "data": bytes(scbk)})

    def _online_lock(self, address: int, wait_s: float = 0.0) -> _Lock:
        """The lock, usable now; one reported online but restarting its session is waited
        for up to ``wait_s``."""
        lock = self._locks.get(address)
        if lock is None:
            raise UnknownLock(f"no lock with address {address} on bus {self.port}")
        deadline = time.monotonic() + wait_s
        while lock.online and not lock.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        if not lock.online:
            raise LockOffline(f"lock {address} on bus {self.port} is offline")
        if not lock.ready:
            raise LockOffline(f"lock {address} on bus {self.port} is restarting its session")
        return lock

    def _submit(self, lock: _Lock, cmd: dict[str, Any]) -> None:
        with self._ctx_lock:
            ok = self._ctx.submit_command(lock.index, cmd)
        if not ok:
            self.stats.commands_failed += 1
            raise OsdpError(f"lock {lock.spec.address}: libosdp refused the command")
        self._kick()

    def _kick(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\x00")

    # --------------------------------------------------------------- state
    def snapshot(self) -> list[LockState]:
        """The current view of every lock, by address."""
        now = time.monotonic()
        with self._state_lock:
            return [
                LockState(
                    address=lk.spec.address,
                    online=bool(lk.online),
                    sc_active=lk.sc_active,
                    tamper=lk.tamper,
                    door_state=lk.door.state,
                    unlocked=lk.door.is_unlocked(now),
                    key_mismatch=lk.key_mismatch,
                )
                for lk in sorted(self._locks.values(), key=lambda x: x.spec.address)
            ]

    def stats_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for metrics and the CLI)."""
        return asdict(self.stats)

    @property
    def port_ok(self) -> bool:
        """True while the serial port is open."""
        return self._serial is not None

    # ---------------------------------------------------------- the thread
    def _poll_clock(self, now: float) -> float:
        """Time during which the bus was actually polled: ``now`` minus the thread's lateness.

        A loop normally comes round every poll interval plus a refresh; a longer gap
        means this thread did not run (CPU starvation, a stopped process, a blocked
        call), and nobody polled the locks then. Liveness is judged on this clock, so
        a missed poll is not taken for a lock's silence.
        """
        if self._last_loop is not None:
            gap = now - self._last_loop
            late = max(0.0, gap - (self._poll_interval + _LOOP_SLACK_S))
            self.stats.late_s += late
            self._poll_time += gap - late
        self._last_loop = now
        return self._poll_time

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            self._poll_now = self._poll_clock(now)
            try:
                if self._serial is None and now >= self._next_open:
                    self._open_port(now)
                with self._ctx_lock:
                    self._ctx.refresh()
                self._after_refresh(now)
            except Exception:
                # The bus must keep running: count, log (no personal data), go on.
                self.stats.callback_errors += 1
                log.exception("osdp bus loop error", extra={"port": self.port})
            self._wait(self._poll_interval)

    def _wait(self, timeout: float) -> None:
        """Sleep until bytes arrive, a command is queued, or ``timeout`` passes."""
        fds = [self._wake_r]
        port = self._serial
        if port is not None:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                fds.append(port.fileno())
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except (OSError, ValueError):
            time.sleep(timeout)  # the port fd went bad: the next read reports it
            return
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)

    def _after_refresh(self, now: float) -> None:
        frames, self._frames = self._frames, []
        for frame in frames:
            self._on_frame(frame, now)
        scan = self._scanner.stats
        if scan.bad_frames != self.stats.bad_frames or scan.junk_bytes != self.stats.junk_bytes:
            self._last_garbage_at = now
        self.stats.frames = scan.frames
        self.stats.bad_frames = scan.bad_frames
        self.stats.junk_bytes = scan.junk_bytes
        lib_events, self._lib_events = self._lib_events, []
        for index, event in lib_events:
            self._handle_lib_event(index, event, now)
        for lock in self._locks.values():
            self._update_lock(lock, now)
            with self._state_lock:
                changed = lock.door.tick(now)
                if lock.baseline_until is not None and now >= lock.baseline_until:
                    lock.baseline_until = None
                    changed = lock.door.baseline_missing() or changed
            if changed is not None:
                self._emit_door(lock, changed)
        if self._port_ok is False and self._serial is not None:
            self._port_ok = True

    def _on_frame(self, frame: Frame, now: float) -> None:
        lock = self._locks.get(frame.address)
        if lock is None:
            return
        if frame.is_reply:
            if frame.code != REPLY_NAK:
                lock.last_reply = self._poll_now
            if frame.code == REPLY_CCRYPT:
                lock.ccrypt_at = now
            elif frame.code == REPLY_RMAC_I:
                lock.ccrypt_at = None  # both sides proved the key: handshake done
                lock.failed_handshakes = 0

    def _update_lock(self, lock: _Lock, now: float) -> None:
        # libosdp's status bitmasks stop at 32 locks; its notifications do not.
        lib_online = lock.lib_online
        sc_active = lock.lib_sc
        alive = self._poll_now - lock.last_reply < self._offline_after
        secure_ok = sc_active or not lock.spec.secure
        ready = lib_online and alive and secure_ok and not lock.disabled
        lock.ready = ready
        if ready:
            lock.last_ready = self._poll_now
            if lock.in_hiccup:
                lock.in_hiccup = False
                lock.restart_backoff = 0.0
                lock.failed_handshakes = 0
                self.stats.hiccups += 1
                log.info(
                    "lock session restored",
                    extra={"port": self.port, "address": lock.spec.address},
                )
            online = True
        elif lock.online and alive and self._poll_now - lock.last_ready < self._offline_after:
            # Answering, but its session was dropped: a hiccup unless it lasts. Restart it
            # as soon as libosdp lets go, without the backoff meant for dead locks.
            if not lock.in_hiccup:
                lock.in_hiccup = True
                lock.restart_backoff = 0.0
                lock.next_restart = min(lock.next_restart, now)
            online = True
        else:
            lock.in_hiccup = False
            online = False
        if lock.disabled:
            # Second half of a restart: re-enable after one refresh in DISABLED.
            with self._ctx_lock:
                self._ctx.enable_pd(lock.index)
            lock.disabled = False
        if lock.ccrypt_at is not None and now - lock.ccrypt_at > _HANDSHAKE_S and not sc_active:
            lock.ccrypt_at = None
            lock.failed_handshakes += 1
            # Line noise can spoil one handshake; a key mismatch spoils every one.
            quiet_line = now - self._last_garbage_at > 3.0
            # In install mode the first handshake fails by design (factory key).
            if lock.failed_handshakes >= 2 and quiet_line and not lock.spec.install_mode:
                self._key_mismatch(lock)
        elif sc_active and lock.key_mismatch:
            lock.key_mismatch = False
        startup_grace = now - self._started_at < max(3.0, self._offline_after * 1.5)
        went = online != lock.online and (online or lock.online is not None or not startup_grace)
        if went or (ready and sc_active != lock.sc_active):
            self._set_online(lock, online, sc_active, now)
        silent = self._poll_now - lock.last_reply > _SILENT_S
        if not ready and silent and now >= lock.next_restart:
            self._restart(lock, now)

    def _set_online(self, lock: _Lock, online: bool, sc_active: bool, now: float) -> None:
        was_online = lock.online
        with self._state_lock:
            lock.online = online
            lock.sc_active = sc_active and online
            if not online:
                lock.offline_since = now
                lock.baseline_until = None
                lock.door.reset()
                lock.door.relocked()
        if online:
            lock.restart_backoff = 0.0
            lock.failed_handshakes = 0
            lock.baseline_until = now + _BASELINE_WAIT_S
        log.info(
            "lock %s",
            "online" if online else "offline",
            extra={"port": self.port, "address": lock.spec.address, "sc": lock.sc_active},
        )
        self._emit(
            LockStatusChanged(
                address=lock.spec.address,
                online=online,
                tamper=lock.tamper,
                sc_active=lock.sc_active,
                at=time.time(),
                was_online=was_online,
                was_tamper=lock.tamper,
            )
        )

    def _restart(self, lock: _Lock, now: float) -> None:
        """Take the lock out of libosdp's long offline wait: disable now, enable next loop."""
        with self._ctx_lock:
            self._ctx.disable_pd(lock.index)
        lock.disabled = True
        lock.lib_online = lock.lib_sc = False
        self.stats.restarts += 1
        if lock.key_mismatch:
            lock.restart_backoff = min(60.0, max(5.0, lock.restart_backoff * 2))
        else:
            base = max(self._retry_s, 0.04 * len(self._locks))
            lock.restart_backoff = min(8.0, max(base, lock.restart_backoff * 2))
        lock.next_restart = now + lock.restart_backoff

    def _key_mismatch(self, lock: _Lock) -> None:
        self.stats.key_mismatches += 1
        if lock.key_mismatch:
            return
        lock.key_mismatch = True
        log.error(
            "lock refused the secure-channel key; kept offline (no plain-mode fallback)",
            extra={"port": self.port, "address": lock.spec.address},
        )
        self._emit(KeyMismatch(address=lock.spec.address, at=time.time()))

    # -------------------------------------------------------- lock reports
    def _on_lib_event(self, index: int, event: dict[str, Any]) -> int:
        # Called inside refresh() on the driver thread; handled after it returns.
        self._lib_events.append((index, dict(event)))
        return 0

    def _handle_lib_event(self, index: int, event: dict[str, Any], now: float) -> None:
        lock = self._by_index.get(index)
        if lock is None:
            self._bad_event("event for an unknown lock index")
            return
        kind = event.get("event")
        try:
            if kind == osdp.Event.Status:
                self._on_status(lock, int(event["type"]), bytes(event["report"]), now)
            elif kind == osdp.Event.KeyPress:
                self._on_keypad(lock, bytes(event["data"]))
            elif kind == osdp.Event.CardRead:
                data = bytes(event["data"])
                bits = event.get("length")
                self._emit(
                    CardPresented(
                        address=lock.spec.address,
                        data=data,
                        format=int(event["format"]),
                        bits=int(bits) if bits is not None else None,
                        at=time.time(),
                    )
                )
            elif kind == osdp.Event.Notification:
                self._on_notification(lock, event)
            else:
                self._bad_event(f"unhandled event type {kind!r}")
        except (KeyError, TypeError, ValueError) as exc:
            self._bad_event(f"malformed event from lock {lock.spec.address}: {exc}")

    def _on_status(self, lock: _Lock, kind: int, report: bytes, now: float) -> None:
        if kind == osdp.StatusReportType.Input:
            if not report:
                raise ValueError("empty input status report")
            with self._state_lock:
                changed = lock.door.contact(now, bool(report[0]))
            if changed is not None:
                self._emit_door(lock, changed)
        elif kind == osdp.StatusReportType.Local:
            if not report:
                raise ValueError("empty local status report")
            tamper = bool(report[0])
            if tamper != lock.tamper:
                was = lock.tamper
                with self._state_lock:
                    lock.tamper = tamper
                log.warning(
                    "lock tamper %s",
                    "on" if tamper else "cleared",
                    extra={"port": self.port, "address": lock.spec.address},
                )
                self._emit(
                    LockStatusChanged(
                        address=lock.spec.address,
                        online=bool(lock.online),
                        tamper=tamper,
                        sc_active=lock.sc_active,
                        at=time.time(),
                        was_online=lock.online,
                        was_tamper=was,
                    )
                )
        # Output and remote-reader reports carry nothing the agent acts on.

    def _on_keypad(self, lock: _Lock, data: bytes) -> None:
        digits = data.decode("ascii", errors="replace")
        if not digits or not set(digits) <= _KEYPAD_CHARS:
            raise ValueError(f"keypad report with {len(data)} keys outside 0-9 * #")
        self._emit(KeypadEntry(address=lock.spec.address, digits=digits, at=time.time()))

    def _on_notification(self, lock: _Lock, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == _NOTIFY_COMMAND:
            command, ok = int(event["arg0"]), bool(event["arg1"])
            if not ok:
                self.stats.commands_failed += 1
                if command == osdp.Command.Output:
                    with self._state_lock:
                        lock.door.relocked()
                name = _COMMAND_NAMES.get(command, str(command))
                log.warning(
                    "lock command failed",
                    extra={"port": self.port, "address": lock.spec.address, "command": name},
                )
                self._emit(CommandFailed(address=lock.spec.address, command=name, at=time.time()))
        elif kind == _NOTIFY_PD:
            lock.lib_online = bool(event["arg0"])
        elif kind == _NOTIFY_SC:
            lock.lib_sc = bool(event["arg0"])
        else:
            self._bad_event(f"unknown notification type {kind!r}")
        # Whether the lock counts as online is judged in _update_lock.

    def _bad_event(self, what: str) -> None:
        self.stats.bad_events += 1
        log.warning("bad OSDP event ignored: %s", what, extra={"port": self.port})

    def _emit_door(self, lock: _Lock, state: DoorState) -> None:
        event = DoorStateChanged(
            address=lock.spec.address, state=state, previous=lock.last_door, at=time.time()
        )
        lock.last_door = state
        if state is DoorState.FORCED:
            log.warning("door forced", extra={"port": self.port, "address": lock.spec.address})
        self._emit(event)

    def _emit(self, event: LockEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            self.stats.callback_errors += 1
            log.exception("on_event handler failed", extra={"port": self.port})

    # ---------------------------------------------------------------- port
    def _open_port(self, now: float) -> None:
        try:
            port = serial.Serial(
                self.port, self.baudrate, timeout=0, write_timeout=1.0, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            self._next_open = now + 0.25
            if self._port_ok is not False:
                self._report_port(False, f"cannot open: {exc.__class__.__name__}")
            return
        self._scanner.reset()
        self._serial = port
        if self._port_ok is False:
            self.stats.port_reopens += 1
            self._report_port(True, "reopened")
            # The locks lost their sessions while the port was gone: reconnect now.
            for lock in self._locks.values():
                lock.restart_backoff = 0.0
                self._restart(lock, now)
        elif self._port_ok is None:
            self._port_ok = True

    def _port_failed(self, exc: BaseException) -> None:
        if self._serial is None:
            return
        self.stats.port_losses += 1
        self._close_port()
        self._next_open = time.monotonic() + 0.25
        self._report_port(False, f"lost: {exc.__class__.__name__}")

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()

    def _report_port(self, ok: bool, detail: str) -> None:
        self._port_ok = ok
        level = logging.INFO if ok else logging.ERROR
        log.log(level, "serial port %s", detail, extra={"port": self.port})
        self._emit(BusStatus(port=self.port, port_ok=ok, at=time.time(), detail=detail))

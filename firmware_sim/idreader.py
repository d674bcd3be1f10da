"""ID card SAM reader module simulator on a pseudo-terminal.

The driver opens a stable symlink (like a udev name) that points at the current
pty slave; :meth:`IdReaderSimulator.unplug` closes the pty (the driver's reads
fail) and :meth:`replug` makes a new one and re-points the link.

Behaviour mimicked: "find" answers 9F once per presentation; after a successful
read it answers 80 until the card is removed and presented again (the common
vendor behaviour; ``refind_while_present=True`` gives the other one). Replies
are paced at ``baud`` (10 bits per byte), so timings are like a real wire.

Frames are encoded here independently of ``drivers.idcard``.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import errno
import os
import queue
import random
import select
import shutil
import tempfile
import threading
import time
import tty
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

from firmware_sim.idcards import VirtualCard
from firmware_sim.ptylink import point_link

PREAMBLE = b"\xaa\xaa\xaa\x96\x69"

COMMANDS: dict[tuple[int, int], str] = {
    (0x10, 0xFF): "reset",
    (0x11, 0xFF): "sam_status",
    (0x12, 0xFF): "sam_id",
    (0x20, 0x01): "find",
    (0x20, 0x02): "select",
    (0x30, 0x01): "read",
    (0x30, 0x03): "read_address",
    (0x30, 0x10): "read_fingerprint",
}

DEFAULT_SAM_ID = (
    bytes([5, 0, 1, 0])
    + (20101206).to_bytes(4, "little")
    + (123456).to_bytes(4, "little")
    + (987654321).to_bytes(4, "little")
)


class Fault(enum.Enum):
    """Faults the simulator can inject into its next replies."""

    BAD_CHECKSUM = "bad_checksum"
    SPLIT = "split"  # reply sent in random pieces with pauses
    DELAY = "delay"  # reply held back for ``delay`` seconds
    GARBAGE = "garbage"  # junk (with preamble fragments) before the reply
    SAM_ERROR = "sam_error"  # reply carries SW3 = ``code``, no data
    NO_ANSWER = "no_answer"


@dataclass
class _Injection:
    fault: Fault
    command: str | None
    remaining: int
    code: int
    delay: float


def _xor(data: bytes) -> int:
    return reduce(lambda a, b: a ^ b, data, 0)


def reply_frame(sw3: int, data: bytes = b"") -> bytes:
    """A reply frame ``AA AA AA 96 69 LEN 00 00 SW3 DATA CHK``."""
    body = (len(data) + 4).to_bytes(2, "big") + bytes([0, 0, sw3]) + data
    return PREAMBLE + body + bytes([_xor(body)])


class IdReaderSimulator:
    """A reader module answering on a pty; tests present cards and inject faults."""

    def __init__(
        self,
        baud: int = 115200,
        sam_id: bytes = DEFAULT_SAM_ID,
        refind_while_present: bool = False,
        processing_s: float = 0.002,
        seed: int | None = None,
    ) -> None:
        self.baud = baud
        self.sam_id = sam_id
        self.refind_while_present = refind_while_present
        self.processing_s = processing_s
        self.commands: collections.Counter[str] = collections.Counter()
        self.bad_commands = 0
        self._rng = random.Random(seed)
        self._dir = Path(tempfile.mkdtemp(prefix="idreader-"))
        self._link = self._dir / "ttyIDR0"
        self._lock = threading.Lock()
        self._card: VirtualCard | None = None
        self._fresh = False
        self._selected = False
        self._faults: list[_Injection] = []
        self._requests: queue.Queue[tuple[str, threading.Event]] = queue.Queue()
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buf = bytearray()

    @property
    def port_path(self) -> str:
        """The stable path the driver opens (a symlink to the current pty)."""
        return str(self._link)

    def start(self) -> str:
        """Create the pty, start answering, and return :attr:`port_path`."""
        self._open_pty()
        self._thread = threading.Thread(target=self._run, name="idreader-sim", daemon=True)
        self._thread.start()
        return self.port_path

    def stop(self) -> None:
        """Stop answering, close the pty and remove the link directory."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._close_pty()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> IdReaderSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def present(self, card: VirtualCard) -> None:
        """Put a card on the reader (a new presentation)."""
        with self._lock:
            self._card, self._fresh, self._selected = card, True, False

    def remove(self) -> None:
        """Take the card away."""
        with self._lock:
            self._card, self._fresh, self._selected = None, False, False

    def inject(
        self,
        fault: Fault,
        *,
        command: str | None = None,
        count: int = 1,
        code: int = 0x41,
        delay: float = 0.3,
    ) -> None:
        """Apply ``fault`` to the next ``count`` replies (to ``command`` only, if given)."""
        if command is not None and command not in COMMANDS.values():
            raise ValueError(f"unknown command name {command!r}")
        with self._lock:
            self._faults.append(_Injection(fault, command, count, code, delay))

    def clear_faults(self) -> None:
        """Forget every pending injected fault."""
        with self._lock:
            self._faults.clear()

    def unplug(self) -> None:
        """Close the pty as if the USB adapter were pulled; the link disappears."""
        self._request("unplug")

    def replug(self) -> None:
        """Make a new pty and point the link at it."""
        self._request("replug")

    def _request(self, what: str) -> None:
        done = threading.Event()
        self._requests.put((what, done))
        if not done.wait(5.0):
            raise TimeoutError(f"simulator did not {what}")

    # -- pty handling (only on the simulator thread once started) -----------

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
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
        self._buf.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._serve_requests()
            master = self._master
            if master is None:
                time.sleep(0.02)
                continue
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(master, 4096)
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EAGAIN, errno.EBADF):
                    time.sleep(0.01)
                    continue
                raise
            self._buf += data
            for cmd, para in self._commands():
                self._answer(cmd, para)

    def _serve_requests(self) -> None:
        while True:
            try:
                what, done = self._requests.get_nowait()
            except queue.Empty:
                return
            if what == "unplug":
                self._close_pty()
            elif what == "replug" and self._master is None:
                self._open_pty()
            done.set()

    def _commands(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        buf = self._buf
        while True:
            start = buf.find(PREAMBLE)
            if start < 0:
                del buf[: max(0, len(buf) - 4)]
                return out
            del buf[:start]
            if len(buf) < 7:
                return out
            length = int.from_bytes(buf[5:7], "big")
            if length < 3 or length > 64:
                self.bad_commands += 1
                self._send(reply_frame(0x11))
                del buf[:1]
                continue
            if len(buf) < 7 + length:
                return out
            body = bytes(buf[5 : 7 + length - 1])
            if _xor(body) != buf[7 + length - 1]:
                self.bad_commands += 1
                self._send(reply_frame(0x10))
                del buf[:1]
                continue
            out.append((body[2], body[3]))
            del buf[: 7 + length]

    # -- module behaviour ---------------------------------------------------

    def _answer(self, cmd: int, para: int) -> None:
        name = COMMANDS.get((cmd, para), "unknown")
        self.commands[name] += 1
        with self._lock:
            fault = self._take_fault(name)
            frame = self._reply_for(name)
        if self.processing_s:
            time.sleep(self.processing_s)
        if fault is None:
            self._send(frame)
            return
        kind = fault.fault
        if kind is Fault.NO_ANSWER:
            return
        if kind is Fault.SAM_ERROR:
            self._send(reply_frame(fault.code))
        elif kind is Fault.BAD_CHECKSUM:
            self._send(frame[:-1] + bytes([frame[-1] ^ 0x5A]))
        elif kind is Fault.DELAY:
            time.sleep(fault.delay)
            self._send(frame)
        elif kind is Fault.GARBAGE:
            junk = bytes(self._rng.randrange(256) for _ in range(self._rng.randrange(5, 40)))
            self._send(junk + PREAMBLE[:3] + b"\x00" + PREAMBLE[:4] + frame)
        elif kind is Fault.SPLIT:
            self._send_split(frame, fault.delay)

    def _take_fault(self, name: str) -> _Injection | None:
        for inj in self._faults:
            if inj.command is None or inj.command == name:
                inj.remaining -= 1
                if inj.remaining <= 0:
                    self._faults.remove(inj)
                return inj
        return None

    def _reply_for(self, name: str) -> bytes:
        card = self._card
        if name == "sam_id":
            return reply_frame(0x90, self.sam_id)
        if name in ("reset", "sam_status"):
            return reply_frame(0x90)
        if name == "find":
            if card is not None and (self._fresh or self.refind_while_present):
                return reply_frame(0x9F, bytes(4))
            return reply_frame(0x80, bytes(4))
        if name == "select":
            if card is None:
                return reply_frame(0x81, bytes(8))
            self._selected = True
            return reply_frame(0x90, bytes(8))
        if name in ("read", "read_fingerprint"):
            if card is None or not self._selected:
                return reply_frame(0x41)
            self._selected, self._fresh = False, False
            text, photo = card.text_block(), card.photo
            head = len(text).to_bytes(2, "big") + len(photo).to_bytes(2, "big")
            if name == "read_fingerprint":
                return reply_frame(0x90, head + b"\x00\x00" + text + photo)
            return reply_frame(0x90, head + text + photo)
        if name == "read_address":
            return reply_frame(0x91)
        return reply_frame(0x21)

    # -- the wire -----------------------------------------------------------

    def _send(self, data: bytes) -> None:
        """Write ``data`` paced at the baud rate (10 bits per byte)."""
        start = time.monotonic()
        sent = 0
        for i in range(0, len(data), 64):
            chunk = data[i : i + 64]
            if not self._write(chunk):
                return
            sent += len(chunk)
            wait = start + sent * 10 / self.baud - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    def _send_split(self, data: bytes, max_pause: float) -> None:
        pos = 0
        while pos < len(data):
            n = self._rng.randint(1, max(1, len(data) // 3))
            self._send(data[pos : pos + n])
            pos += n
            time.sleep(self._rng.uniform(0.0, min(max_pause, 0.1)))

    def _write(self, data: bytes) -> bool:
        deadline = time.monotonic() + 1.0
        view = memoryview(data)
        while view:
            master = self._master
            if master is None:
                return False
            try:
                n = os.write(master, view)
                view = view[n:]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                select.select([], [master], [], 0.05)
            except OSError:
                return False
        return True

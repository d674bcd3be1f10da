"""Serial transport and poll loop for an ID card SAM reader module (pyserial).

:class:`ModuleLink` sends one command and waits for its reply, retrying on a bad
frame or silence. :class:`IdCardReader` runs find -> select -> read in a thread
and calls ``on_card`` once per presentation.

Presentation rule: the common modules answer "find" with 9F once per card
entering the field and with 80 while an already-read card stays; others keep
answering 9F. The reader handles both: after a successful read the card counts
as present until ``absent_after`` consecutive find failures; while present, a
successful find triggers a re-read at most every ``recheck_interval`` seconds
and a card is reported again only if its text block differs (a swapped card).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import logging
import termios
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import serial

from drivers.idcard.codec import (
    BadFrame,
    CardData,
    FrameError,
    IdCardError,
    ReaderCommand,
    Reply,
    ReplyParser,
    SamStatusError,
    Sw3,
    decode_card_data,
    encode_command,
    format_sam_id,
    photo_format,
)
from drivers.idcard.identity import Identity, IdentityError, decode_card_text, parse_identity
from drivers.idcard.textblock import Layout

log = logging.getLogger(__name__)

_READ_SLICE_S = 0.05


class ReaderTimeout(IdCardError):
    """The module did not answer a command in time, after all retries."""


class PortLost(IdCardError):
    """The serial port failed (unplugged, closed, I/O error)."""


class SerialPort(Protocol):
    """What the driver needs of a ``serial.Serial``."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


def open_serial(port: str, baud: int) -> SerialPort:
    """Open ``port`` 8N1 with a short read slice, exclusively."""
    return serial.Serial(
        port, baudrate=baud, timeout=_READ_SLICE_S, write_timeout=2.0, exclusive=True
    )


@dataclass
class ReaderStats:
    """Counters of a reader (monotonic for the reader's lifetime)."""

    commands: int = 0
    cards_read: int = 0
    bad_frames: int = 0
    timeouts: int = 0
    retries: int = 0
    sam_errors: int = 0
    bad_cards: int = 0
    port_losses: int = 0
    reconnects: int = 0


class ReaderState(enum.Enum):
    """Connection state of a reader."""

    STARTING = "starting"
    CONNECTED = "connected"
    PORT_UNAVAILABLE = "port_unavailable"
    PORT_LOST = "port_lost"
    RECOVERED = "recovered"
    NOT_RESPONDING = "not_responding"
    SAM_ERROR = "sam_error"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ReaderStatus:
    """A change of reader state, with the SAM id and a copy of the counters."""

    state: ReaderState
    port: str
    sam_id: str | None
    detail: str
    stats: ReaderStats


@dataclass(frozen=True)
class CardRead:
    """One card presentation as read from the module (no identity semantics).

    The text block is decoded once, here: ``fields`` holds the raw trimmed strings
    of the detected ``layout`` and ``identity`` the typed, checked identity (check
    digit, birth date, card type; the dates against today are the door's to check).
    When the text cannot be decoded or does not check, ``identity`` is None and
    ``problem`` says why (the raw ``text`` is still there for the record).
    """

    text: bytes
    layout: Layout | None
    fields: Mapping[str, str]
    identity: Identity | None
    problem: IdentityError | None
    photo: bytes
    photo_format: str
    sam_id: str | None
    read_ms: float
    fingerprint: bytes = b""
    at: float = field(default_factory=time.time)

    def __repr__(self) -> str:  # never show personal data
        kind = self.layout.name if self.layout else "undecoded"
        return (
            f"CardRead({kind}, photo={self.photo_format}/{len(self.photo)}B,"
            f" read_ms={self.read_ms:.1f})"
        )


def card_read_from(data: CardData, sam_id: str | None, read_ms: float) -> CardRead:
    """Decode a read reply's payload into a :class:`CardRead`."""
    layout: Layout | None = None
    fields: Mapping[str, str] = {}
    identity: Identity | None = None
    problem: IdentityError | None = None
    try:
        raw = decode_card_text(data.text)
        layout, fields = raw.layout, raw.fields
        identity = parse_identity(raw)
    except IdentityError as exc:
        problem = exc
    return CardRead(
        text=data.text,
        layout=layout,
        fields=fields,
        identity=identity,
        problem=problem,
        photo=data.photo,
        photo_format=photo_format(data.photo),
        sam_id=sam_id,
        read_ms=read_ms,
        fingerprint=data.fingerprint,
    )


class ModuleLink:
    """ReaderCommand/reply exchange over an open port, with timeout and retries."""

    def __init__(
        self,
        port: SerialPort,
        stats: ReaderStats,
        reply_timeout: float = 1.0,
        retries: int = 2,
    ) -> None:
        self._port = port
        self._stats = stats
        self._timeout = reply_timeout
        self._retries = retries
        self._parser = ReplyParser()

    def transact(self, command: ReaderCommand, *expect: int, retries: int | None = None) -> Reply:
        """Send ``command`` and return its reply; SW3 must be in ``expect`` if given.

        Raises :class:`ReaderTimeout`, :class:`FrameError` (bad frames on every
        attempt), :class:`SamStatusError` or :class:`PortLost`.
        """
        frame = encode_command(command)
        bad = 0
        retries = self._retries if retries is None else retries
        for attempt in range(retries + 1):
            if attempt:
                self._stats.retries += 1
            self._stats.commands += 1
            reply = self._attempt(frame)
            if isinstance(reply, Reply):
                if expect and reply.sw3 not in expect:
                    self._stats.sam_errors += 1
                    raise SamStatusError(reply.sw3, command.name.lower())
                return reply
            if reply == "bad":
                bad += 1
        what = command.name.lower()
        attempts = retries + 1
        if bad:
            raise FrameError(f"{what}: bad reply frames on {bad} of {attempts} attempts")
        raise ReaderTimeout(f"{what}: no answer after {attempts} attempts")

    def _attempt(self, frame: bytes) -> Reply | str:
        port = self._port
        self._parser.reset()
        try:
            port.reset_input_buffer()
            port.write(frame)
            deadline = time.monotonic() + self._timeout
            while time.monotonic() < deadline:
                chunk = port.read(max(1, port.in_waiting))
                if not chunk:
                    continue
                outcome = self._take(self._parser.feed(chunk))
                if outcome is not None:
                    return outcome
        except (serial.SerialException, OSError, termios.error) as exc:
            raise PortLost(f"serial port failed: {type(exc).__name__}") from None
        outcome = self._take(self._parser.flush())
        if outcome is not None:
            return outcome
        self._stats.timeouts += 1
        return "timeout"

    def _take(self, events: list[Reply | BadFrame]) -> Reply | str | None:
        for event in events:
            if isinstance(event, Reply):
                return event
            self._stats.bad_frames += 1
            log.warning("bad frame from ID reader: %s", event.reason)
        return "bad" if events else None


CardCallback = Callable[[CardRead], None]
StatusCallback = Callable[[ReaderStatus], None]
PortOpener = Callable[[str, int], SerialPort]


class IdCardReader:
    """Polls a reader module in a thread and reports each card presentation once."""

    def __init__(
        self,
        port: str,
        on_card: CardCallback,
        on_status: StatusCallback | None = None,
        *,
        baud: int = 115200,
        poll_interval: float = 0.2,
        reply_timeout: float = 1.0,
        retries: int = 2,
        absent_after: int = 2,
        recheck_interval: float = 1.0,
        reopen_interval: float = 0.5,
        opener: PortOpener = open_serial,
    ) -> None:
        self.port = port
        self._on_card = on_card
        self._on_status = on_status
        self._baud = baud
        self._poll = poll_interval
        self._reply_timeout = reply_timeout
        self._retries = retries
        self._absent_after = absent_after
        self._recheck = recheck_interval
        self._reopen = reopen_interval
        self._opener = opener
        self._stats = ReaderStats()
        self._state = ReaderState.STARTING
        self._sam_id: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._serial: SerialPort | None = None
        self._link: ModuleLink | None = None
        self._was_connected = False
        # Presentation tracking.
        self._present = False
        self._misses = 0
        self._last_digest: bytes | None = None
        self._last_check = 0.0

    @property
    def stats(self) -> ReaderStats:
        """A copy of the counters."""
        return dataclasses.replace(self._stats)

    @property
    def sam_id(self) -> str | None:
        """The module's SAM id, once read."""
        return self._sam_id

    @property
    def state(self) -> ReaderState:
        """The current connection state."""
        return self._state

    def status(self, detail: str = "") -> ReaderStatus:
        """The current status (for ``lockgw status``)."""
        return ReaderStatus(self._state, self.port, self._sam_id, detail, self.stats)

    @property
    def running(self) -> bool:
        """True while the poll thread is alive (including while the port is away)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the poll thread."""
        if self._thread is not None:
            raise RuntimeError("reader already started")
        self._thread = threading.Thread(target=self._run, name=f"idcard:{self.port}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the poll thread and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()
        self._set_state(ReaderState.STOPPED, "stopped")

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._link is None and not self._connect():
                self._stop.wait(self._reopen)
                continue
            try:
                self._cycle()
            except PortLost as exc:
                self._stats.port_losses += 1
                self._close()
                self._set_state(ReaderState.PORT_LOST, str(exc))
                continue
            except ReaderTimeout as exc:
                self._set_state(ReaderState.NOT_RESPONDING, str(exc))
            except SamStatusError as exc:
                self._set_state(ReaderState.SAM_ERROR, str(exc))
            except FrameError as exc:
                log.warning("ID reader exchange failed: %s", exc)
            except Exception:  # a bug must not kill the reader thread
                log.exception("ID reader poll cycle failed")
            self._stop.wait(self._poll)

    def _connect(self) -> bool:
        try:
            self._serial = self._opener(self.port, self._baud)
        except (serial.SerialException, OSError) as exc:
            if self._state not in (ReaderState.PORT_LOST, ReaderState.PORT_UNAVAILABLE):
                self._set_state(ReaderState.PORT_UNAVAILABLE, f"cannot open port: {exc}")
            return False
        self._link = ModuleLink(self._serial, self._stats, self._reply_timeout, self._retries)
        self._present, self._misses, self._last_digest = False, 0, None
        recovered = self._was_connected
        if recovered:
            self._stats.reconnects += 1
        self._was_connected = True
        try:
            self._read_sam_id()
        except PortLost:
            self._stats.port_losses += 1
            self._close()
            return False
        except IdCardError as exc:
            log.warning("could not read SAM id: %s", exc)
        state = ReaderState.RECOVERED if recovered else ReaderState.CONNECTED
        self._set_state(state, "port reopened" if recovered else "port open")
        return True

    def _read_sam_id(self) -> None:
        assert self._link is not None
        reply = self._link.transact(ReaderCommand.READ_SAM_ID, Sw3.SUCCESS)
        self._sam_id = format_sam_id(reply.data)

    def _cycle(self) -> None:
        link = self._link
        assert link is not None
        if self._sam_id is None:
            self._read_sam_id()
        found = link.transact(ReaderCommand.FIND_CARD, Sw3.CARD_FOUND, Sw3.FIND_FAILED)
        t0 = time.perf_counter()
        if self._state not in (ReaderState.CONNECTED, ReaderState.RECOVERED):
            self._set_state(ReaderState.CONNECTED, "module answering")
        if found.sw3 != Sw3.CARD_FOUND:
            self._misses += 1
            if self._present and self._misses >= self._absent_after:
                self._present, self._last_digest = False, None
            return
        self._misses = 0
        now = time.monotonic()
        if self._present and now - self._last_check < self._recheck:
            return
        data = self._select_and_read(link)
        digest = hashlib.sha256(data.text + data.photo).digest()
        self._last_check = now
        if self._present and digest == self._last_digest:
            return
        read = card_read_from(data, self._sam_id, (time.perf_counter() - t0) * 1000.0)
        self._present, self._last_digest = True, digest
        self._stats.cards_read += 1
        if read.problem is not None:
            self._stats.bad_cards += 1
        try:
            self._on_card(read)
        except Exception:
            log.exception("on_card callback failed")

    def _select_and_read(self, link: ModuleLink) -> CardData:
        # A module may consider the card read once it has sent the reply, so a
        # reply lost on the wire is retried as select + read, not read alone.
        error: IdCardError | None = None
        for attempt in range(self._retries + 1):
            if attempt:
                self._stats.retries += 1
            try:
                link.transact(ReaderCommand.SELECT_CARD, Sw3.SUCCESS)
                reply = link.transact(ReaderCommand.READ_TEXT_PHOTO, Sw3.SUCCESS, retries=0)
            except (ReaderTimeout, FrameError, SamStatusError) as exc:
                error = exc
                continue
            try:
                return decode_card_data(reply)
            except IdCardError as exc:
                self._stats.bad_cards += 1
                error = exc
        assert error is not None
        raise error

    def _close(self) -> None:
        self._link = None
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None

    def _set_state(self, state: ReaderState, detail: str) -> None:
        if state is self._state:
            return
        self._state = state
        log.info("ID reader %s: %s (%s)", self.port, state.value, detail)
        if self._on_status is not None:
            try:
                self._on_status(self.status(detail))
            except Exception:
                log.exception("on_status callback failed")

"""The serial QR scanner module's byte stream, sans I/O: bytes in, codes and errors out.

The common access-control QR modules send the decoded text of each code followed
by a line terminator (CR, LF or CR LF, depending on the module's setting). The
decoder splits the stream at any terminator, so all three work at once, and
checks each line as a code's text (:func:`check_code`). A line that is too long
is refused once, and everything up to its terminator is skipped; a line with
bytes that are not text is refused whole. Nothing partial is ever reported: a
line still waiting for its terminator is held, and the transport calls
:meth:`ScannerDecoder.expire` after a silence so that a half line (a scanner
reset mid-send) is dropped rather than glued to the next code.

Errors name what was wrong and never quote the bytes (a code is a credential).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# What the gateway accepts as a code's text. The contract passes the text "exactly
# as scanned"; the identity service's codes are short printable strings, so anything
# longer or with control characters is not one (and would only fill the outbox).
MAX_CODE_CHARS = 1024
_TERMINATORS = b"\r\n"


class QrProblem(enum.Enum):
    """Why a line or a decoded code was refused."""

    EMPTY = "empty"
    TOO_LONG = "too_long"
    NOT_UTF8 = "not_utf8"
    CONTROL_CHARACTER = "control_character"
    PARTIAL_LINE = "partial_line"


class QrTextError(ValueError):
    """A code's text refused, with the reason; the message holds no part of the text."""

    def __init__(self, problem: QrProblem, detail: str) -> None:
        self.problem = problem
        super().__init__(f"{problem.value}: {detail}")


@dataclass(frozen=True)
class Scanned:
    """One complete code's text as sent by the scanner."""

    text: str

    def __repr__(self) -> str:  # the text is a credential
        return f"Scanned({len(self.text)} chars)"


@dataclass(frozen=True)
class ScanRefused:
    """A line that is not a code's text."""

    error: QrTextError


ScanEvent = Scanned | ScanRefused


def check_code(raw: bytes | str, *, max_chars: int = MAX_CODE_CHARS) -> str:
    """The text of a code, checked: non-empty UTF-8, at most ``max_chars``, no control
    characters (including DEL and the C1 range). QrTextError names the problem."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise QrTextError(QrProblem.NOT_UTF8, f"byte {exc.start} is not UTF-8") from None
    else:
        text = raw
    if not text:
        raise QrTextError(QrProblem.EMPTY, "no text")
    if len(text) > max_chars:
        raise QrTextError(QrProblem.TOO_LONG, f"{len(text)} characters, at most {max_chars}")
    for i, ch in enumerate(text):
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0:
            raise QrTextError(QrProblem.CONTROL_CHARACTER, f"control character U+{code:04X} at {i}")
    return text


class ScannerDecoder:
    """Splits a scanner's bytes into :class:`Scanned` codes and :class:`ScanRefused` lines."""

    def __init__(self, *, max_chars: int = MAX_CODE_CHARS) -> None:
        self._max_chars = max_chars
        # UTF-8 takes at most 4 bytes per character.
        self._max_bytes = max_chars * 4
        self._buf = bytearray()
        self._skipping = False  # inside an over-long line, until its terminator
        self.counters: dict[str, int] = {"codes": 0, "refused": 0, "bytes": 0}

    def feed(self, data: bytes) -> list[ScanEvent]:
        """Take bytes as they arrive; the complete lines they finish, in order."""
        self.counters["bytes"] += len(data)
        events: list[ScanEvent] = []
        start = 0
        for i, byte in enumerate(data):
            if byte in _TERMINATORS:
                self._add(data[start:i], events)
                self._end_line(events)
                start = i + 1
        self._add(data[start:], events)
        return events

    def expire(self) -> list[ScanEvent]:
        """The scanner went quiet mid-line: drop the held half line (reported once)."""
        if not self._buf and not self._skipping:
            return []
        held, self._buf = len(self._buf), bytearray()
        if self._skipping:
            self._skipping = False
            return []
        return [self._refuse(QrProblem.PARTIAL_LINE, f"{held} bytes without a line terminator")]

    @property
    def pending(self) -> int:
        """Bytes held waiting for a terminator."""
        return len(self._buf)

    def _add(self, chunk: bytes, events: list[ScanEvent]) -> None:
        if self._skipping or not chunk:
            return
        self._buf += chunk
        if len(self._buf) > self._max_bytes:
            events.append(
                self._refuse(
                    QrProblem.TOO_LONG, f"line longer than {self._max_bytes} bytes, skipped"
                )
            )
            self._buf = bytearray()
            self._skipping = True

    def _end_line(self, events: list[ScanEvent]) -> None:
        if self._skipping:
            self._skipping = False
            return
        line, self._buf = bytes(self._buf), bytearray()
        if not line:
            return  # the LF of a CR LF, or a blank line
        try:
            text = check_code(line, max_chars=self._max_chars)
        except QrTextError as exc:
            self.counters["refused"] += 1
            self._count(exc.problem)
            events.append(ScanRefused(exc))
            return
        self.counters["codes"] += 1
        events.append(Scanned(text))

    def _refuse(self, problem: QrProblem, detail: str) -> ScanRefused:
        self.counters["refused"] += 1
        self._count(problem)
        return ScanRefused(QrTextError(problem, detail))

    def _count(self, problem: QrProblem) -> None:
        name = f"refused_{problem.value}"
        self.counters[name] = self.counters.get(name, 0) + 1

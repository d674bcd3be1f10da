"""Sans-I/O codec for resident ID card SAM reader modules.

Frames (see ``../shared/contract/idcard-reader-serial.md``)::

    command: AA AA AA 96 69 | LEN(2, BE) | CMD PARA | DATA | CHK
    reply:   AA AA AA 96 69 | LEN(2, BE) | SW1 SW2 SW3 | DATA | CHK

``LEN`` counts every byte after itself, ``CHK`` included; ``CHK`` is the XOR of
every byte from ``LEN`` to the last data byte.

:class:`ReplyParser` takes bytes in whatever pieces the serial port delivers
and yields :class:`Reply` objects or :class:`BadFrame` reports; it resynchronises
on the preamble after garbage and never raises on bad input.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import reduce

PREAMBLE = b"\xaa\xaa\xaa\x96\x69"
_HEADER = len(PREAMBLE) + 2  # preamble + LEN
# Smallest reply: SW1 SW2 SW3 CHK.
MIN_REPLY_LEN = 4
# Real replies top out near 0x0908 (text + photo + fingerprint); JPEG/PNG photos
# from the simulator are larger. Anything claiming more is treated as garbage.
MAX_REPLY_LEN = 0x4000

TEXT_BLOCK_LEN = 256
WLT_PHOTO_LEN = 1024


class IdCardError(Exception):
    """Base of every error the ID card driver raises."""


class FrameError(IdCardError):
    """A frame failed its length, checksum or structure check."""


class SamStatusError(IdCardError):
    """The module answered with a status other than the one expected."""

    def __init__(self, code: int, context: str = "") -> None:
        self.code = code
        self.status = Sw3.describe(code)
        where = f" ({context})" if context else ""
        super().__init__(f"reader module status 0x{code:02X} {self.status}{where}")


class Sw3(enum.IntEnum):
    """SW3 status codes of reader module replies."""

    SUCCESS = 0x90
    CARD_FOUND = 0x9F
    FIND_FAILED = 0x80
    SELECT_FAILED = 0x81
    READ_FAILED = 0x41
    COMMAND_CHECKSUM = 0x10
    COMMAND_LENGTH = 0x11
    BAD_PARAMETER = 0x21
    NOT_AUTHORISED = 0x23
    UNKNOWN_ERROR = 0x24
    AUTH_CARD_FAILED = 0x31
    AUTH_SAM_FAILED = 0x32
    INFO_CHECK_FAILED = 0x33
    UNKNOWN_CARD_TYPE = 0x40
    RANDOM_FAILED = 0x47
    SAM_SELF_TEST_FAILED = 0x60
    SAM_NOT_AUTHORISED = 0x66
    NO_CONTENT = 0x91

    @classmethod
    def describe(cls, code: int) -> str:
        """Lower-case name of a status code, or ``unknown`` for codes outside the table."""
        try:
            return cls(code).name.lower()
        except ValueError:
            return "unknown"


class ReaderCommand(enum.Enum):
    """Commands as (CMD, PARA)."""

    RESET_SAM = (0x10, 0xFF)
    SAM_STATUS = (0x11, 0xFF)
    READ_SAM_ID = (0x12, 0xFF)
    FIND_CARD = (0x20, 0x01)
    SELECT_CARD = (0x20, 0x02)
    READ_TEXT_PHOTO = (0x30, 0x01)
    READ_NEW_ADDRESS = (0x30, 0x03)
    READ_TEXT_PHOTO_FINGERPRINT = (0x30, 0x10)


def checksum(body: bytes) -> int:
    """XOR of ``body`` (the bytes from LEN to the last data byte)."""
    return reduce(lambda a, b: a ^ b, body, 0)


def _frame(payload: bytes) -> bytes:
    length = len(payload) + 1
    if length > 0xFFFF:
        raise FrameError(f"frame payload too long: {len(payload)} bytes")
    body = length.to_bytes(2, "big") + payload
    return PREAMBLE + body + bytes([checksum(body)])


def encode_command(command: ReaderCommand, data: bytes = b"") -> bytes:
    """Build a command frame, e.g. find card -> ``AA AA AA 96 69 00 03 20 01 22``."""
    cmd, para = command.value
    return _frame(bytes([cmd, para]) + data)


def encode_reply(sw3: int, data: bytes = b"", sw1: int = 0, sw2: int = 0) -> bytes:
    """Build a reply frame (used by tests; the simulator has its own encoder)."""
    return _frame(bytes([sw1, sw2, sw3]) + data)


@dataclass(frozen=True)
class Reply:
    """One well-formed reply frame."""

    sw1: int
    sw2: int
    sw3: int
    data: bytes

    @property
    def status(self) -> str:
        """Name of the SW3 code."""
        return Sw3.describe(self.sw3)

    def expect(self, *codes: int, context: str = "") -> Reply:
        """Return self when SW3 is one of ``codes``, else raise :class:`SamStatusError`."""
        if self.sw3 not in codes:
            raise SamStatusError(self.sw3, context)
        return self


@dataclass(frozen=True)
class BadFrame:
    """A frame that was dropped: why, and how many bytes were skipped."""

    reason: str
    skipped: int


class ReplyParser:
    """Incremental reply-frame parser with preamble resynchronisation.

    ``feed`` returns what complete input allows; ``flush`` gives up on a pending
    incomplete frame (call it when no more bytes are coming, e.g. on a timeout)
    and rescans what is left, so every complete valid frame is found.
    Frames with SW1/SW2 other than ``00 00`` are rejected as implausible: real
    modules always send zeros there, and the check makes a garbage preamble that
    happens to pass the 8-bit XOR far less likely to be taken for a reply.
    """

    def __init__(self, max_len: int = MAX_REPLY_LEN) -> None:
        self._buf = bytearray()
        self._max_len = max_len

    @property
    def pending(self) -> int:
        """Bytes buffered and not yet resolved."""
        return len(self._buf)

    def reset(self) -> None:
        """Drop everything buffered."""
        self._buf.clear()

    def feed(self, data: bytes) -> list[Reply | BadFrame]:
        """Add bytes; return the replies and bad frames they complete."""
        self._buf += data
        return self._scan(final=False)

    def flush(self) -> list[Reply | BadFrame]:
        """Declare the stream ended: report a truncated frame and rescan after it."""
        events = self._scan(final=True)
        self._buf.clear()
        return events

    def _scan(self, final: bool) -> list[Reply | BadFrame]:
        events: list[Reply | BadFrame] = []
        buf = self._buf
        while True:
            start = buf.find(PREAMBLE)
            if start < 0:
                # Keep a tail that could be the start of a preamble.
                keep = _partial_preamble_len(buf) if not final else 0
                if len(buf) > keep:
                    del buf[: len(buf) - keep]
                return events
            if start:
                del buf[:start]
            if len(buf) < _HEADER:
                if final:
                    events.append(BadFrame("truncated frame header", len(PREAMBLE)))
                    del buf[: len(PREAMBLE)]
                    continue
                return events
            length = int.from_bytes(buf[5:7], "big")
            if length < MIN_REPLY_LEN or length > self._max_len:
                events.append(BadFrame(f"implausible length {length}", 1))
                del buf[:1]
                continue
            total = _HEADER + length
            if len(buf) < total:
                if final:
                    events.append(BadFrame("truncated frame", 1))
                    del buf[:1]
                    continue
                return events
            body = bytes(buf[5 : total - 1])
            if checksum(body) != buf[total - 1]:
                events.append(BadFrame("checksum mismatch", 1))
                del buf[:1]
                continue
            sw1, sw2, sw3 = body[2], body[3], body[4]
            if sw1 or sw2:
                events.append(BadFrame("implausible status bytes", 1))
                del buf[:1]
                continue
            events.append(Reply(sw1, sw2, sw3, body[5:]))
            del buf[:total]


def _partial_preamble_len(buf: bytearray) -> int:
    for n in range(min(len(PREAMBLE) - 1, len(buf)), 0, -1):
        if buf.endswith(PREAMBLE[:n]):
            return n
    return 0


@dataclass(frozen=True)
class CardData:
    """The payload of a successful read: raw text block, photo and fingerprint bytes."""

    text: bytes
    photo: bytes
    fingerprint: bytes = b""

    def __repr__(self) -> str:  # never show personal data
        return f"CardData(text={len(self.text)}B, photo={len(self.photo)}B)"


def decode_card_data(reply: Reply, with_fingerprint: bool = False) -> CardData:
    """Split a read reply (``30 01`` or ``30 10``) into text, photo and fingerprint.

    The embedded lengths must add up to the frame's data exactly and the text
    block must be 256 bytes, so a frame of another kind or a spliced one is
    refused rather than partly trusted.
    """
    reply.expect(Sw3.SUCCESS, context="read card")
    data = reply.data
    head = 6 if with_fingerprint else 4
    if len(data) < head:
        raise FrameError(f"read reply too short: {len(data)} data bytes")
    text_len = int.from_bytes(data[0:2], "big")
    photo_len = int.from_bytes(data[2:4], "big")
    fp_len = int.from_bytes(data[4:6], "big") if with_fingerprint else 0
    if text_len != TEXT_BLOCK_LEN:
        raise FrameError(f"text block length {text_len}, expected {TEXT_BLOCK_LEN}")
    if head + text_len + photo_len + fp_len != len(data):
        raise FrameError(
            f"read reply lengths disagree: text {text_len} + photo {photo_len}"
            f" + fingerprint {fp_len} vs {len(data) - head} data bytes"
        )
    text = data[head : head + text_len]
    photo = data[head + text_len : head + text_len + photo_len]
    fingerprint = data[head + text_len + photo_len :]
    return CardData(text=text, photo=photo, fingerprint=fingerprint)


def photo_format(photo: bytes) -> str:
    """``jpeg`` or ``png`` by magic number, else ``wlt`` (what real modules send)."""
    if photo.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if photo.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    return "wlt"


def format_sam_id(data: bytes) -> str:
    """Vendor-style SAM id string from the 16 data bytes of a read-SAM-id reply.

    Layout as printed by the common vendor SDKs: two 2-byte little-endian
    fields, then three 4-byte little-endian numbers:
    ``AA.BB-CCCCCCCC-DDDDDDDDDD-EEEEEEEEEE``.
    """
    if len(data) != 16:
        raise FrameError(f"SAM id reply has {len(data)} data bytes, expected 16")
    a = int.from_bytes(data[0:2], "little")
    b = int.from_bytes(data[2:4], "little")
    c = int.from_bytes(data[4:8], "little")
    d = int.from_bytes(data[8:12], "little")
    e = int.from_bytes(data[12:16], "little")
    return f"{a:02d}.{b:02d}-{c:08d}-{d:010d}-{e:010d}"

"""OSDP frame scanner: bytes in, validated frame headers out (sans-I/O).

libosdp does the protocol; this codec only watches the bytes the driver reads
so the driver can tell, independently of libosdp's internal state, which lock
last answered with a well-formed reply, whether a secure-channel handshake was
answered (``osdp_CCRYPT``) and how much garbage the line carries.

Frame layout (IEC 60839-11-5): optional mark byte 0xFF, SOM 0x53, address
(bit 7 set on replies), length LSB/MSB (whole frame from SOM), control byte
(bits 0-1 sequence, bit 2 CRC-16 instead of checksum, bit 3 security block
present), [security block: length, type, data], command/reply code, data,
[4-byte MAC], CRC-16 little endian or 1-byte checksum.
"""

from __future__ import annotations

from dataclasses import dataclass

SOM = 0x53
MARK = 0xFF
_HEADER = 5
_MIN_FRAME = 7  # header + code + checksum
MAX_FRAME = 1024

# Reply and command codes the driver looks at.
REPLY_ACK = 0x40
REPLY_NAK = 0x41
REPLY_CCRYPT = 0x76
REPLY_RMAC_I = 0x78
CMD_POLL = 0x60
CMD_CHLNG = 0x76
CMD_SCRYPT = 0x77


def crc16(data: bytes) -> int:
    """CRC-16 as OSDP uses it (CCITT polynomial 0x1021, initial value 0x1D0F)."""
    crc = 0x1D0F
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def checksum(data: bytes) -> int:
    """The 8-bit two's-complement checksum of OSDP frames without CRC."""
    return (-sum(data)) & 0xFF


@dataclass(frozen=True)
class Frame:
    """A well-formed OSDP frame (payload may be encrypted; only headers are read)."""

    address: int
    is_reply: bool
    code: int
    sequence: int
    secure_block_type: int | None
    length: int


@dataclass
class ScanStats:
    """Counters of what the scanner saw; bad bytes are counted, never acted on."""

    frames: int = 0
    bad_frames: int = 0
    junk_bytes: int = 0


class FrameScanner:
    """Incremental scanner: :meth:`feed` bytes as they arrive, get complete frames."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self.stats = ScanStats()

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames completed by them."""
        self._buf += data
        frames: list[Frame] = []
        while True:
            frame, consumed, complete = self._parse()
            if consumed:
                del self._buf[:consumed]
            if frame is not None:
                frames.append(frame)
            elif complete is False:
                break
        return frames

    def reset(self) -> None:
        """Drop a partial frame (the port was reopened)."""
        self._buf.clear()

    def _skip_to_som(self) -> int:
        for i, byte in enumerate(self._buf):
            if byte == SOM:
                return i
            if byte != MARK:
                self.stats.junk_bytes += 1
        return len(self._buf)

    def _parse(self) -> tuple[Frame | None, int, bool | None]:
        """Returns (frame, bytes to drop, None if more parsing may follow / False to wait)."""
        skip = self._skip_to_som()
        if skip:
            return None, skip, None
        buf = self._buf
        if len(buf) < _HEADER:
            return None, 0, False
        length = buf[2] | (buf[3] << 8)
        ctrl = buf[4]
        if length < _MIN_FRAME or length > self._max:
            return self._bad()
        if len(buf) < length:
            return None, 0, False
        frame = bytes(buf[:length])
        if ctrl & 0x04:
            if crc16(frame[:-2]) != (frame[-2] | (frame[-1] << 8)):
                return self._bad()
        elif checksum(frame[:-1]) != frame[-1]:
            return self._bad()
        code_at = _HEADER
        sb_type: int | None = None
        if ctrl & 0x08:
            sb_len = frame[_HEADER]
            if sb_len < 2 or _HEADER + sb_len >= length:
                return self._bad()
            sb_type = frame[_HEADER + 1]
            code_at = _HEADER + sb_len
        self.stats.frames += 1
        parsed = Frame(
            address=frame[1] & 0x7F,
            is_reply=bool(frame[1] & 0x80),
            code=frame[code_at],
            sequence=ctrl & 0x03,
            secure_block_type=sb_type,
            length=length,
        )
        return parsed, length, None

    def _bad(self) -> tuple[None, int, None]:
        # Not a frame after all: drop the SOM byte and resynchronise on the next one.
        self.stats.bad_frames += 1
        return None, 1, None

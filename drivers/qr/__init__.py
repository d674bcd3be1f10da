"""QR codes at the door: the serial scanner module's codec and transport, and camera frames."""

from drivers.qr.codec import (
    MAX_CODE_CHARS,
    QrProblem,
    QrTextError,
    Scanned,
    ScannerDecoder,
    ScanRefused,
    check_code,
)
from drivers.qr.dedup import SeenCodes

__all__ = [
    "MAX_CODE_CHARS",
    "QrProblem",
    "QrTextError",
    "ScanRefused",
    "Scanned",
    "ScannerDecoder",
    "SeenCodes",
    "check_code",
]

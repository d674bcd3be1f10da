"""QR codes in camera frames, decoded with zxing-cpp (QR Code format only)."""

from __future__ import annotations

import logging

import numpy as np
import zxingcpp

from drivers.qr.codec import QrTextError, check_code

log = logging.getLogger(__name__)

_QR_ONLY = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)


class FrameDecoder:
    """Finds QR codes in BGR or grayscale frames; counts what it refuses."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {"frames": 0, "codes": 0, "refused": 0}

    def decode(self, frame: np.ndarray) -> list[str]:
        """The checked texts of every valid QR code in ``frame`` (usually none or one)."""
        self.counters["frames"] += 1
        found = zxingcpp.read_barcodes(frame, formats=_QR_ONLY)
        texts: list[str] = []
        for barcode in found:
            if not barcode.valid:
                continue
            try:
                # The raw bytes, so a code that is not UTF-8 is refused, not re-encoded.
                texts.append(check_code(bytes(barcode.bytes)))
            except QrTextError as exc:
                self.counters["refused"] += 1
                log.warning("QR code in the camera frame refused: %s", exc)
                continue
            self.counters["codes"] += 1
        return texts

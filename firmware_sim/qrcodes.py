"""QR code pictures for the simulated building: a code generated with zxing-cpp's
writer, shown on a 'phone screen' held up beside the guest's face."""

from __future__ import annotations

import cv2
import numpy as np
import zxingcpp


def qr_image(text: str, module_px: int = 4) -> np.ndarray:
    """A grayscale QR code of ``text`` with its quiet zone, ``module_px`` per module."""
    barcode = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode)
    return np.array(zxingcpp.write_barcode_to_image(barcode, scale=module_px))


def hold_up(
    scene: np.ndarray,
    text: str,
    *,
    size: tuple[int, int] = (640, 480),
    screen_px: int = 150,
    corner: str = "right",
) -> np.ndarray:
    """``scene`` (a BGR photo of the guest) framed at ``size`` with a phone screen showing
    the code in the lower ``corner``, as a door camera sees a guest holding up a phone."""
    width, height = size
    h, w = scene.shape[:2]
    scale = min(width / w, height / h)
    resized = cv2.resize(scene, (max(1, round(w * scale)), max(1, round(h * scale))))
    frame = np.full((height, width, 3), 96, dtype=np.uint8)
    y0, x0 = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    frame[y0 : y0 + resized.shape[0], x0 : x0 + resized.shape[1]] = resized
    code = qr_image(text)
    code = cv2.resize(code, (screen_px, screen_px), interpolation=cv2.INTER_NEAREST)
    pad = 8
    screen = np.full((screen_px + 2 * pad, screen_px + 2 * pad, 3), 250, dtype=np.uint8)
    screen[pad:-pad, pad:-pad] = cv2.cvtColor(code, cv2.COLOR_GRAY2BGR)
    sy = height - screen.shape[0] - 10
    sx = width - screen.shape[1] - 10 if corner == "right" else 10
    frame[sy : sy + screen.shape[0], sx : sx + screen.shape[1]] = screen
    return frame

"""Size limits of central-link-v1 revision 1.1 (section 5), and the grant photo check.

Pure functions, no I/O: the JPEG's size is read from its frame header (SOFn
marker), never by decoding the image.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

MAX_PAYLOAD_BYTES = 1_048_576
"""One sealed message (MQTT payload), either direction."""
PACKET_MARGIN_BYTES = 4096
"""The MQTT packet's fixed header, topic and properties, beyond the payload."""
MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + PACKET_MARGIN_BYTES
"""The MQTT Maximum Packet Size the gateway announces at connect (1,052,672)."""
PHOTO_MAX_BYTES = 200 * 1024
"""``face_jpeg_b64`` before base64."""
PHOTO_MAX_SIDE_PX = 1280
"""The photo's longer side."""
SYNC_PART_MAX_AGE_S = 600.0
"""Parts of one ``grant.sync`` are kept at most this long after the first arrived."""

# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG), CC (DAC) share the range but do not.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


class PhotoError(ValueError):
    """A grant photo breaks the contract; ``code`` is the ack's reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOFn header, or None when ``data`` is not a JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            return None
        if marker in _SOF:
            if i + 9 > len(data):
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + length
    return None


def check_photo(b64: str, where: str) -> None:
    """Raise PhotoError when ``b64`` is over the contract's bytes or side limits."""
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise PhotoError("invalid_body", f"{where}: not base64") from None
    if len(data) > PHOTO_MAX_BYTES:
        raise PhotoError("photo_too_large", f"{where}: {len(data)} bytes, limit {PHOTO_MAX_BYTES}")
    size = jpeg_size(data)
    # Not a JPEG frame header: no face template can be made from it, which the
    # enroller records per guest; the grant itself stays usable by PIN.
    if size is not None and max(size) > PHOTO_MAX_SIDE_PX:
        raise PhotoError(
            "photo_too_large",
            f"{where}: {size[0]}x{size[1]} px, longer side limit {PHOTO_MAX_SIDE_PX}",
        )


def check_grant_photos(grants: list[dict[str, Any]], where: str = "body") -> None:
    """Check every guest photo of ``grants`` (grant.put bodies); PhotoError on the first bad."""
    for i, grant in enumerate(grants):
        place = where if len(grants) == 1 and where == "body" else f"{where}.grants.{i}"
        for j, guest in enumerate(grant.get("guests", [])):
            photo = guest.get("face_jpeg_b64")
            if photo:
                check_photo(photo, f"{place}.guests.{j}.face_jpeg_b64")

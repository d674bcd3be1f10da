"""The 256-byte text block: layout detection and raw field strings (no semantics).

All layouts are UCS-2 little-endian, padded with spaces. The layout is told by
the card-type marker at offset 248 (one UCS-2 character):

- space / NUL: resident ID card (that range is reserved on resident cards);
- ``J``: Hong Kong / Macao / Taiwan residence permit (港澳台居民居住证);
- ``I``: foreign permanent residence ID card, 2017 layout (外国人永久居留身份证);
- ``Y``: foreign permanent residence ID card, 2023 layout.

Any other marker is refused: a card is never read with a layout it may not have.
Field meanings and validation belong to ``drivers.idcard.identity``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from drivers.idcard.codec import TEXT_BLOCK_LEN, IdCardError

TYPE_MARKER_OFFSET = 248


class TextBlockError(IdCardError):
    """The text block is malformed or of an unknown layout."""


class Layout(enum.Enum):
    """Known text-block layouts, valued by their type marker."""

    RESIDENT = " "
    HMT_RESIDENCE_PERMIT = "J"
    FOREIGN_PERMANENT_2017 = "I"
    FOREIGN_PERMANENT_2023 = "Y"


# (field, offset, length in bytes), in block order, covering all 256 bytes.
FIELDS: dict[Layout, tuple[tuple[str, int, int], ...]] = {
    Layout.RESIDENT: (
        ("name", 0, 30),
        ("sex", 30, 2),
        ("nation", 32, 4),
        ("birth", 36, 16),
        ("address", 52, 70),
        ("id_number", 122, 36),
        ("issuer", 158, 30),
        ("valid_from", 188, 16),
        ("valid_until", 204, 16),
        ("reserved", 220, 36),
    ),
    Layout.HMT_RESIDENCE_PERMIT: (
        ("name", 0, 30),
        ("sex", 30, 2),
        ("reserved1", 32, 4),
        ("birth", 36, 16),
        ("address", 52, 70),
        ("id_number", 122, 36),
        ("issuer", 158, 30),
        ("valid_from", 188, 16),
        ("valid_until", 204, 16),
        ("pass_number", 220, 18),
        ("issue_count", 238, 4),
        ("reserved2", 242, 6),
        ("card_type", 248, 2),
        ("reserved3", 250, 6),
    ),
    Layout.FOREIGN_PERMANENT_2017: (
        ("name_en", 0, 120),
        ("sex", 120, 2),
        ("id_number", 122, 30),
        ("nationality", 152, 6),
        ("name", 158, 30),
        ("valid_from", 188, 16),
        ("valid_until", 204, 16),
        ("birth", 220, 16),
        ("card_version", 236, 4),
        ("issuer_code", 240, 8),
        ("card_type", 248, 2),
        ("reserved", 250, 6),
    ),
    Layout.FOREIGN_PERMANENT_2023: (
        ("name", 0, 30),
        ("sex", 30, 2),
        ("renewal_count", 32, 4),
        ("birth", 36, 16),
        ("name_en", 52, 70),
        ("id_number", 122, 36),
        ("reserved1", 158, 30),
        ("valid_from", 188, 16),
        ("valid_until", 204, 16),
        ("name_en_ext", 220, 22),
        ("nationality", 242, 6),
        ("card_type", 248, 2),
        ("previous_number_link", 250, 6),
    ),
}

_PAD = " \x00"


@dataclass(frozen=True)
class RawText:
    """The fields of a text block as trimmed strings, with the detected layout."""

    layout: Layout
    fields: Mapping[str, str]

    def __repr__(self) -> str:  # never show personal data
        return f"RawText(layout={self.layout.name}, fields={len(self.fields)})"


def detect_layout(block: bytes) -> Layout:
    """Tell the layout from the card-type marker at offset 248."""
    _check_len(block)
    marker = _decode(block[TYPE_MARKER_OFFSET : TYPE_MARKER_OFFSET + 2], "card_type")
    if marker in _PAD:
        return Layout.RESIDENT
    try:
        return Layout(marker)
    except ValueError:
        raise TextBlockError(
            f"unknown card layout: type marker U+{ord(marker):04X} at offset 248"
        ) from None


def decode_text_block(block: bytes) -> RawText:
    """Decode every field of the block's layout to a trimmed string."""
    layout = detect_layout(block)
    fields = {
        name: _decode(block[off : off + size], name).strip(_PAD)
        for name, off, size in FIELDS[layout]
    }
    return RawText(layout=layout, fields=fields)


def encode_text_block(layout: Layout, fields: Mapping[str, str]) -> bytes:
    """Build a block (tests and tools); unknown or over-long fields are errors."""
    known = {name: (off, size) for name, off, size in FIELDS[layout]}
    unknown = set(fields) - set(known)
    if unknown:
        raise TextBlockError(f"fields not in the {layout.name} layout: {sorted(unknown)}")
    block = bytearray(" ".encode("utf-16-le") * (TEXT_BLOCK_LEN // 2))
    values = dict(fields)
    if layout is not Layout.RESIDENT:
        values["card_type"] = layout.value
    for name, value in values.items():
        off, size = known[name]
        raw = value.encode("utf-16-le")
        if len(raw) > size:
            raise TextBlockError(f"field {name} too long: {len(raw)} bytes > {size}")
        block[off : off + len(raw)] = raw
    return bytes(block)


def _check_len(block: bytes) -> None:
    if len(block) != TEXT_BLOCK_LEN:
        raise TextBlockError(f"text block is {len(block)} bytes, expected {TEXT_BLOCK_LEN}")


def _decode(raw: bytes, field: str) -> str:
    try:
        text = raw.decode("utf-16-le")
    except UnicodeDecodeError:
        raise TextBlockError(f"field {field} is not valid UCS-2") from None
    if any(ord(ch) > 0xFFFF or (ord(ch) < 0x20 and ch != "\x00") for ch in text):
        raise TextBlockError(f"field {field} holds control or non-UCS-2 characters")
    return text

"""Resident ID card SAM reader modules: pure codec, text-block layouts, serial reader."""

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
    photo_format,
)
from drivers.idcard.textblock import Layout, RawText, TextBlockError, decode_text_block

__all__ = [
    "BadFrame",
    "CardData",
    "FrameError",
    "IdCardError",
    "Layout",
    "RawText",
    "ReaderCommand",
    "Reply",
    "ReplyParser",
    "SamStatusError",
    "Sw3",
    "TextBlockError",
    "decode_card_data",
    "decode_text_block",
    "encode_command",
    "photo_format",
]

"""The pure ID card codec: frames, the stream parser, SW3 codes, text-block layouts."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from drivers.idcard.codec import (
    PREAMBLE,
    BadFrame,
    FrameError,
    IdCardError,
    ReaderCommand,
    Reply,
    ReplyParser,
    SamStatusError,
    Sw3,
    decode_card_data,
    encode_command,
    encode_reply,
    format_sam_id,
    photo_format,
)
from drivers.idcard.textblock import (
    Layout,
    TextBlockError,
    decode_text_block,
    detect_layout,
    encode_text_block,
)
from firmware_sim.idreader import reply_frame
from tests.support.idcard import other_cards, resident_card


def read_reply(text: bytes, photo: bytes) -> bytes:
    data = len(text).to_bytes(2, "big") + len(photo).to_bytes(2, "big") + text + photo
    return encode_reply(0x90, data)


def test_command_frames_match_the_contract() -> None:
    assert encode_command(ReaderCommand.FIND_CARD).hex(" ") == "aa aa aa 96 69 00 03 20 01 22"
    assert encode_command(ReaderCommand.SELECT_CARD).hex(" ") == "aa aa aa 96 69 00 03 20 02 21"
    assert encode_command(ReaderCommand.READ_TEXT_PHOTO).hex(" ") == "aa aa aa 96 69 00 03 30 01 32"


def test_find_reply_from_the_contract_parses() -> None:
    frame = bytes.fromhex("AAAAAA9669000800009F0000000097")
    (reply,) = ReplyParser().feed(frame)
    assert reply == Reply(0, 0, 0x9F, bytes(4))
    assert reply.status == "card_found"


def test_read_reply_layout_text_at_14_photo_at_270() -> None:
    text = resident_card(1).text_block()
    photo = bytes(range(256)) * 4
    frame = read_reply(text, photo)
    assert len(frame) == 1295 and frame[5:7] == b"\x05\x08"
    assert frame[14:270] == text and frame[270:1294] == photo
    (reply,) = ReplyParser().feed(frame)
    assert isinstance(reply, Reply)
    data = decode_card_data(reply)
    assert data.text == text and data.photo == photo
    assert repr(data) == "CardData(text=256B, photo=1024B)"


def test_parser_takes_a_frame_byte_by_byte_and_after_garbage() -> None:
    frame = reply_frame(0x90, bytes(8))
    parser = ReplyParser()
    events: list[Reply | BadFrame] = []
    for b in b"\x00\xaa\xaa\x13" + PREAMBLE[:4] + frame:
        events += parser.feed(bytes([b]))
    assert events == [Reply(0, 0, 0x90, bytes(8))]
    assert parser.pending == 0


def test_checksum_error_is_reported_and_the_next_frame_still_found() -> None:
    good = reply_frame(0x9F, bytes(4))
    bad = good[:-1] + bytes([good[-1] ^ 1])
    events = ReplyParser().feed(bad + good)
    assert events == [BadFrame("checksum mismatch", 1), Reply(0, 0, 0x9F, bytes(4))]


def test_implausible_length_and_status_bytes_are_bad_frames() -> None:
    events = ReplyParser().feed(PREAMBLE + b"\x00\x02" + b"\x00" * 4)
    assert isinstance(events[0], BadFrame) and "length" in events[0].reason
    body = b"\x00\x04\x01\x00\x90"
    frame = PREAMBLE + body + bytes([0x04 ^ 0x01 ^ 0x90])
    events = ReplyParser().feed(frame)
    assert events == [BadFrame("implausible status bytes", 1)]


def test_truncated_frame_is_reported_on_flush() -> None:
    parser = ReplyParser()
    assert parser.feed(reply_frame(0x90, bytes(100))[:50]) == []
    events = parser.flush()
    assert events and all(isinstance(e, BadFrame) for e in events)


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0x80, "find_failed"),
        (0x41, "read_failed"),
        (0x31, "auth_card_failed"),
        (0x66, "sam_not_authorised"),
        (0x91, "no_content"),
        (0x10, "command_checksum"),
        (0x77, "unknown"),
    ],
)
def test_sw3_codes_map_to_named_errors(code: int, name: str) -> None:
    (reply,) = ReplyParser().feed(encode_reply(code))
    assert isinstance(reply, Reply)
    with pytest.raises(SamStatusError) as err:
        reply.expect(Sw3.SUCCESS, context="read card")
    assert err.value.code == code and err.value.status == name
    assert name in str(err.value)


def test_read_reply_with_inconsistent_lengths_is_refused() -> None:
    text = resident_card(2).text_block()
    data = (256).to_bytes(2, "big") + (1024).to_bytes(2, "big") + text + bytes(1000)
    (reply,) = ReplyParser().feed(encode_reply(0x90, data))
    assert isinstance(reply, Reply)
    with pytest.raises(FrameError, match="disagree"):
        decode_card_data(reply)
    short = (200).to_bytes(2, "big") + (0).to_bytes(2, "big") + bytes(200)
    (reply,) = ReplyParser().feed(encode_reply(0x90, short))
    assert isinstance(reply, Reply)
    with pytest.raises(FrameError, match="text block length"):
        decode_card_data(reply)


def test_photo_format_sniffing() -> None:
    assert photo_format(b"\xff\xd8\xff\xe0rest") == "jpeg"
    assert photo_format(b"\x89PNG\r\n\x1a\nrest") == "png"
    assert photo_format(b"WLf\x00" + bytes(1020)) == "wlt"


def test_sam_id_format() -> None:
    data = bytes([5, 0, 1, 0]) + (20101206).to_bytes(4, "little") + (42).to_bytes(4, "little")
    data += (7).to_bytes(4, "little")
    assert format_sam_id(data) == "05.01-20101206-0000000042-0000000007"
    with pytest.raises(FrameError):
        format_sam_id(b"\x00" * 3)


# -- text blocks ---------------------------------------------------------------


def test_resident_block_decodes_to_trimmed_fields() -> None:
    card = resident_card(3, name_len=15, address_len=35)
    raw = decode_text_block(card.text_block())
    assert raw.layout is Layout.RESIDENT
    assert raw.fields["name"] == card.name and len(raw.fields["name"]) == 15
    assert raw.fields["address"] == card.address and len(raw.fields["address"]) == 35
    assert raw.fields["id_number"] == card.id_number
    assert card.name not in repr(raw)


@pytest.mark.parametrize(
    ("kind", "layout"),
    [
        ("hmt_residence_permit", Layout.HMT_RESIDENCE_PERMIT),
        ("foreign_permanent_2017", Layout.FOREIGN_PERMANENT_2017),
        ("foreign_permanent_2023", Layout.FOREIGN_PERMANENT_2023),
    ],
)
def test_other_layouts_are_detected(kind: str, layout: Layout) -> None:
    card = other_cards()[kind]
    raw = decode_text_block(card.text_block())
    assert raw.layout is layout
    assert raw.fields["id_number"] == card.id_number
    assert raw.fields["birth"] == card.birth


def test_unknown_marker_is_refused() -> None:
    block = bytearray(resident_card(4).text_block())
    block[248:250] = "Q".encode("utf-16-le")
    with pytest.raises(TextBlockError, match="unknown card layout"):
        detect_layout(bytes(block))


def test_bad_ucs2_and_control_characters_are_refused() -> None:
    block = bytearray(resident_card(5).text_block())
    block[0:2] = b"\x00\xd8"  # lone high surrogate
    with pytest.raises(TextBlockError, match="name"):
        decode_text_block(bytes(block))
    block = bytearray(resident_card(5).text_block())
    block[52:54] = b"\x07\x00"
    with pytest.raises(TextBlockError, match="address"):
        decode_text_block(bytes(block))
    with pytest.raises(TextBlockError, match="255 bytes"):
        decode_text_block(bytes(255))


def test_encode_text_block_refuses_overlong_fields() -> None:
    with pytest.raises(TextBlockError, match="too long"):
        encode_text_block(Layout.RESIDENT, {"name": "王" * 16})
    block = encode_text_block(Layout.HMT_RESIDENCE_PERMIT, {"name": "陈"})
    assert detect_layout(block) is Layout.HMT_RESIDENCE_PERMIT


# -- property: arbitrary streams ---------------------------------------------------

_TEXTS = [resident_card(i).text_block() for i in range(4)]


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["find", "nocard", "select", "read", "error"]))
    if kind == "find":
        return reply_frame(0x9F, bytes(4))
    if kind == "nocard":
        return reply_frame(0x80, bytes(4))
    if kind == "select":
        return reply_frame(0x90, bytes(8))
    if kind == "error":
        return reply_frame(draw(st.sampled_from([0x41, 0x31, 0x60, 0x24])))
    text = draw(st.sampled_from(_TEXTS))
    photo = draw(st.binary(min_size=0, max_size=64))
    return read_reply(text, photo)


@st.composite
def segments(draw: st.DrawFn) -> tuple[str, bytes, bytes]:
    """(kind, bytes to put in the stream, the valid frame it carries if any)."""
    kind = draw(st.sampled_from(["valid", "garbage", "flipped", "truncated"]))
    if kind == "garbage":
        pieces = draw(
            st.lists(
                st.one_of(
                    st.binary(max_size=20),
                    st.sampled_from([PREAMBLE[:n] for n in range(1, 5)]),
                ),
                max_size=4,
            )
        )
        return kind, b"".join(pieces), b""
    frame = draw(valid_frames())
    if kind == "valid":
        return kind, frame, frame
    if kind == "flipped":
        # Any single byte after LEN changed: the XOR must catch it.
        pos = draw(st.integers(7, len(frame) - 1))
        delta = draw(st.integers(1, 255))
        bad = bytearray(frame)
        bad[pos] ^= delta
        return kind, bytes(bad), b""
    # Cut inside the header, then a valid frame follows at once.
    cut = draw(st.integers(1, 8))
    follow = draw(valid_frames())
    return kind, frame[:cut] + follow, follow


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(segments(), max_size=8),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
)
def test_parser_on_arbitrary_streams(
    parts: list[tuple[str, bytes, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(p[1] for p in parts)
    expected = [p[2] for p in parts if p[2]]
    # Garbage may not form a whole preamble by accident (inside a piece or across
    # pieces): the property is about frames we put in, not ones chance made.
    inserted = sum(1 for p in parts if p[0] in ("valid", "flipped"))
    inserted += sum(1 + (p[1].count(PREAMBLE) > 1) for p in parts if p[0] == "truncated")
    assume(stream.count(PREAMBLE) == inserted)
    parser = ReplyParser()
    events: list[Reply | BadFrame] = []
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    # The parser reports bad input as BadFrame events; it raises nothing at all.
    for a, b in itertools.pairwise(bounds):
        events += parser.feed(stream[a:b])
    events += parser.flush()
    replies = [e for e in events if isinstance(e, Reply)]
    # Every valid frame is found, in order, and nothing else is.
    assert [encode_reply(r.sw3, r.data) for r in replies] == expected
    # No card comes out of anything but an intact read frame.
    cards = []
    for r in replies:
        with contextlib.suppress(IdCardError):
            cards.append(decode_card_data(r).text)
    expected_cards = [t for t in (_card_text(f) for f in expected) if t is not None]
    assert cards == expected_cards


def _card_text(frame: bytes) -> bytes | None:
    return frame[14:270] if frame[9] == 0x90 and len(frame) >= 270 else None


@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=10))
@settings(max_examples=100, deadline=None)
def test_parser_never_raises_on_random_bytes(data: bytes, cuts: list[int]) -> None:
    parser = ReplyParser()
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    for a, b in itertools.pairwise(bounds):
        for event in parser.feed(data[a:b]):
            assert isinstance(event, Reply | BadFrame)
    parser.flush()


@pytest.mark.parametrize("layout", list(Layout))
def test_every_layout_tiles_the_256_bytes(layout: Layout) -> None:
    from drivers.idcard.textblock import FIELDS

    pos = 0
    for _name, off, size in FIELDS[layout]:
        assert off == pos and size % 2 == 0
        pos += size
    assert pos == 256

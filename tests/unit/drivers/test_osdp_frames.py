"""The OSDP frame scanner: valid frames out, garbage counted and skipped."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.osdp.frames import FrameScanner, checksum, crc16


def frame(
    address: int, code: int, data: bytes = b"", *, reply: bool = False, sqn: int = 1
) -> bytes:
    body_len = 5 + 1 + len(data) + 2
    head = bytes([0x53, address | (0x80 if reply else 0), body_len & 0xFF, body_len >> 8])
    head += bytes([0x04 | sqn])
    pkt = head + bytes([code]) + data
    crc = crc16(pkt)
    return b"\xff" + pkt + bytes([crc & 0xFF, crc >> 8])


def test_crc_matches_the_osdp_reference_value() -> None:
    # CRC-16/AUG-CCITT check value for "123456789".
    assert crc16(b"123456789") == 0xE5CC


def test_parses_command_and_reply_across_chunks() -> None:
    scanner = FrameScanner()
    stream = frame(3, 0x60) + frame(3, 0x40, reply=True)
    out = []
    for i in range(len(stream)):
        out += scanner.feed(stream[i : i + 1])
    assert [(f.address, f.is_reply, f.code) for f in out] == [(3, False, 0x60), (3, True, 0x40)]
    assert scanner.stats.bad_frames == 0 and scanner.stats.junk_bytes == 0


def test_checksum_frames_are_accepted() -> None:
    pkt = bytes([0x53, 0x85, 7, 0, 0x01, 0x40])
    scanner = FrameScanner()
    (f,) = scanner.feed(pkt + bytes([checksum(pkt)]))
    assert (f.address, f.is_reply, f.code) == (5, True, 0x40)


def test_corrupted_frame_is_counted_and_the_next_one_still_parses() -> None:
    bad = bytearray(frame(2, 0x40, b"\x01\x02", reply=True))
    bad[7] ^= 0x10
    scanner = FrameScanner()
    out = scanner.feed(bytes(bad) + b"\x00\x13\x37" + frame(2, 0x45, reply=True))
    assert [f.code for f in out] == [0x45]
    assert scanner.stats.bad_frames >= 1
    assert scanner.stats.junk_bytes > 0


def test_secure_block_moves_the_code() -> None:
    body = bytes([0x53, 0x81, 0, 0, 0x0D, 0x03, 0x12, 0x01, 0x76])  # SCB len 3, type 0x12
    length = len(body) + 2
    pkt = bytearray(body)
    pkt[2] = length
    crc = crc16(bytes(pkt))
    (f,) = FrameScanner().feed(bytes(pkt) + bytes([crc & 0xFF, crc >> 8]))
    assert f.code == 0x76 and f.secure_block_type == 0x12


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_yield_a_frame_with_a_wrong_crc(junk: bytes) -> None:
    scanner = FrameScanner()
    frames = scanner.feed(junk)
    # Every accepted frame passed its check; with random input that is very rare.
    assert len(frames) <= 1
    assert scanner.stats.frames == len(frames)

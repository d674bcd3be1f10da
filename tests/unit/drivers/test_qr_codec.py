"""The QR scanner codec: bytes in, codes and refusals out (no I/O)."""

from __future__ import annotations

import pytest

from drivers.qr import (
    QrProblem,
    QrTextError,
    Scanned,
    ScannerDecoder,
    ScanRefused,
    SeenCodes,
    check_code,
)

CODE = "CTID1.eyJ0IjoiYWJjIn0.k3Jd9-x_Q"


def texts(events: list[Scanned | ScanRefused]) -> list[str]:
    return [e.text for e in events if isinstance(e, Scanned)]


def problems(events: list[Scanned | ScanRefused]) -> list[QrProblem]:
    return [e.error.problem for e in events if isinstance(e, ScanRefused)]


@pytest.mark.parametrize("terminator", [b"\r", b"\n", b"\r\n"])
def test_each_common_terminator_ends_a_code(terminator: bytes) -> None:
    dec = ScannerDecoder()
    events = dec.feed(CODE.encode() + terminator + CODE.encode() + terminator)
    assert texts(events) == [CODE, CODE]
    assert problems(events) == []
    assert dec.counters["codes"] == 2


def test_a_code_split_across_reads_is_reported_once_complete() -> None:
    dec = ScannerDecoder()
    data = CODE.encode() + b"\r\n"
    seen: list[str] = []
    for i in range(len(data)):
        seen += texts(dec.feed(data[i : i + 1]))
        if i < len(CODE) - 1:
            assert seen == []
    assert seen == [CODE]
    assert dec.pending == 0


def test_a_half_line_is_dropped_after_silence_not_glued_to_the_next() -> None:
    dec = ScannerDecoder()
    assert dec.feed(b"CTID1.half") == []
    expired = dec.expire()
    assert problems(expired) == [QrProblem.PARTIAL_LINE]
    assert "10 bytes" in str(expired[0].error)  # type: ignore[union-attr]
    assert texts(dec.feed(CODE.encode() + b"\n")) == [CODE]
    assert dec.counters["refused_partial_line"] == 1
    assert dec.expire() == []


def test_garbage_lines_are_refused_with_the_reason_and_counted() -> None:
    dec = ScannerDecoder()
    events = dec.feed(b"\x00\x01\x02junk\r\n" + b"\xff\xfe\xfd\n" + CODE.encode() + b"\n")
    assert problems(events) == [QrProblem.CONTROL_CHARACTER, QrProblem.NOT_UTF8]
    assert texts(events) == [CODE]
    assert dec.counters["refused"] == 2
    assert dec.counters["refused_control_character"] == 1
    assert dec.counters["refused_not_utf8"] == 1


def test_an_over_long_line_is_refused_once_and_skipped_to_its_end() -> None:
    dec = ScannerDecoder(max_chars=16)
    events = dec.feed(b"A" * 40)
    events += dec.feed(b"B" * 100)
    events += dec.feed(b"C" * 10 + b"\n" + b"short\n")
    assert problems(events) == [QrProblem.TOO_LONG]
    assert texts(events) == ["short"]


def test_blank_lines_are_not_codes() -> None:
    dec = ScannerDecoder()
    assert dec.feed(b"\r\n\r\n\n\r") == []
    assert dec.counters["refused"] == 0


def test_refusals_never_quote_the_text() -> None:
    secret = "CTID1.secret-token-value\x07"
    with pytest.raises(QrTextError) as info:
        check_code(secret)
    assert "secret" not in str(info.value)
    assert info.value.problem is QrProblem.CONTROL_CHARACTER


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", QrProblem.EMPTY),
        ("x" * 1025, QrProblem.TOO_LONG),
        ("abc\x7fdef", QrProblem.CONTROL_CHARACTER),
        ("abc\u0085def", QrProblem.CONTROL_CHARACTER),
        (b"\xc3\x28", QrProblem.NOT_UTF8),
    ],
)
def test_check_code_names_the_problem(raw: bytes | str, problem: QrProblem) -> None:
    with pytest.raises(QrTextError) as info:
        check_code(raw)
    assert info.value.problem is problem


def test_check_code_accepts_printable_unicode() -> None:
    assert check_code("网证:ABC-123/xyz=") == "网证:ABC-123/xyz="


def test_a_code_is_passed_once_within_its_lifetime_then_again_after() -> None:
    seen = SeenCodes(lifetime_s=60.0)
    assert seen.first_time(CODE, now=100.0)
    assert not seen.first_time(CODE, now=101.0)
    assert not seen.first_time(CODE, now=159.0)
    assert seen.first_time("other", now=159.5)
    assert seen.repeats == 2
    assert seen.first_time(CODE, now=160.5)


def test_seen_codes_stays_bounded() -> None:
    seen = SeenCodes(lifetime_s=1e9, max_entries=3)
    for i in range(5):
        assert seen.first_time(f"c{i}", now=float(i))
    assert seen.first_time("c0", now=10.0)  # forgotten: only the newest three are kept
    assert not seen.first_time("c4", now=10.0)

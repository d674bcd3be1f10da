"""The reader driver against the simulator over real pseudo-terminals."""

from __future__ import annotations

import argparse
import logging
import time
from datetime import date

import pytest

from agent.cli import readers as readers_cli
from drivers.idcard.identity import NATIONS, CardType, parse_identity
from drivers.idcard.reader import ReaderState
from drivers.idcard.textblock import Layout
from firmware_sim.idcards import FOREIGN_2017, FOREIGN_2023, HMT_PERMIT, sample_card
from firmware_sim.idreader import Fault, IdReaderSimulator
from tests.support.idcard import harness, other_cards, resident_card, wait_for

TODAY = date(2026, 6, 1)


def test_round_trip_names_addresses_sexes_nations_and_long_term() -> None:
    codes = sorted(NATIONS)
    cards = [
        resident_card(
            i,
            name_len=1 + i % 15,
            address_len=35 if i % 4 == 0 else 1 + i % 35,
            nation=code,
            sex="1" if i % 2 else "2",
        )
        for i, code in enumerate(codes)
    ]
    cards[-1].valid_until = "长期"
    with harness() as h:
        for card in cards:
            read = h.present_and_read(card)
            assert read.layout is Layout.RESIDENT
            assert read.fields["name"] == card.name
            assert read.fields["address"] == card.address
            # The reader decodes the card once; the typed identity travels with the read.
            assert read.problem is None and read.identity is not None
            assert read.identity == parse_identity(read.text, TODAY)
            ident = read.identity
            assert ident.name == card.name and ident.address == card.address
            assert ident.nation_code == card.nation and ident.sex.value == card.sex
            assert ident.id_number == card.id_number
            assert read.photo == card.photo and read.photo_format == "wlt"
        assert ident.valid_until is None
        assert len(h.cards) == len(cards)
        assert h.reader.stats.bad_frames == 0


@pytest.mark.parametrize(
    ("kind", "card_type"),
    [
        (HMT_PERMIT, CardType.HMT_RESIDENCE_PERMIT),
        (FOREIGN_2017, CardType.FOREIGN_PERMANENT_2017),
        (FOREIGN_2023, CardType.FOREIGN_PERMANENT_2023),
    ],
)
def test_round_trip_other_card_types(kind: str, card_type: CardType) -> None:
    card = other_cards()[kind]
    with harness() as h:
        read = h.present_and_read(card)
    ident = parse_identity(read.text, TODAY)
    assert ident.card_type is card_type
    assert ident.id_number == card.id_number and ident.birth.strftime("%Y%m%d") == card.birth


def test_jpeg_photo_is_carried_and_marked() -> None:
    photo = b"\xff\xd8\xff\xe0" + bytes(3000) + b"\xff\xd9"
    with harness() as h:
        read = h.present_and_read(sample_card(photo=photo, photo_format="jpeg"))
    assert read.photo == photo and read.photo_format == "jpeg"


def test_card_left_on_reader_is_read_once_and_a_new_presentation_again() -> None:
    with harness() as h:
        h.sim.present(sample_card())
        wait_for(lambda: len(h.cards) == 1, what="first read")
        n = h.sim.commands["find"]
        wait_for(lambda: h.sim.commands["find"] > n + 15, what="polls with the card left")
        assert len(h.cards) == 1
        h.remove_and_settle()
        h.sim.present(sample_card())
        wait_for(lambda: len(h.cards) == 2, what="second presentation")


def test_module_that_keeps_finding_the_card_does_not_repeat_it() -> None:
    with harness(refind_while_present=True, recheck_interval=0.1) as h:
        h.sim.present(sample_card())
        wait_for(lambda: len(h.cards) == 1, what="first read")
        n = h.sim.commands["read"]
        wait_for(lambda: h.sim.commands["read"] >= n + 3, what="re-reads of the same card")
        assert len(h.cards) == 1
        # A different card swapped in without a gap is reported.
        h.sim.present(resident_card(9))
        wait_for(lambda: len(h.cards) == 2, what="the swapped card")
        assert h.cards[1].fields["name"] == resident_card(9).name


@pytest.mark.parametrize(
    ("fault", "counter"),
    [
        (Fault.BAD_CHECKSUM, "bad_frames"),
        (Fault.SPLIT, None),
        (Fault.DELAY, None),
        (Fault.GARBAGE, None),
        (Fault.SAM_ERROR, "sam_errors"),
        (Fault.NO_ANSWER, "timeouts"),
    ],
)
def test_faults_on_the_read_reply_are_survived(fault: Fault, counter: str | None) -> None:
    with harness() as h:
        h.sim.inject(fault, command="read", code=0x41, delay=0.2)
        card = resident_card(3, name_len=7)
        read = h.present_and_read(card)
        assert read.fields["name"] == card.name
        assert read.fields["id_number"] == card.id_number
        stats = h.reader.stats
        if counter:
            assert getattr(stats, counter) >= 1
            assert stats.retries >= 1
        assert len(h.cards) == 1


def test_faults_on_find_are_survived() -> None:
    with harness() as h:
        for fault in (Fault.BAD_CHECKSUM, Fault.GARBAGE, Fault.SPLIT, Fault.NO_ANSWER):
            h.sim.inject(fault, command="find")
        read = h.present_and_read(sample_card())
        assert read.layout is Layout.RESIDENT
        assert h.reader.stats.bad_frames >= 1 and h.reader.stats.timeouts >= 1


def test_persistent_sam_error_is_reported_then_cleared() -> None:
    with harness() as h:
        h.sim.inject(Fault.SAM_ERROR, command="find", code=0x60, count=1000)
        wait_for(lambda: "sam_error" in h.states(), what="sam_error status")
        last = [s for s in h.statuses if s.state is ReaderState.SAM_ERROR][-1]
        assert "sam_self_test_failed" in last.detail and last.stats.sam_errors >= 1
        h.sim.clear_faults()
        wait_for(lambda: h.states()[-1] == "connected", what="connected again")
        h.present_and_read(sample_card())


def test_silent_module_is_reported_not_responding() -> None:
    with harness(reply_timeout=0.2, retries=1) as h:
        h.sim.inject(Fault.NO_ANSWER, command="find", count=1000)
        wait_for(lambda: "not_responding" in h.states(), what="not_responding status")
        assert h.reader.stats.timeouts >= 2
        h.sim.clear_faults()
        wait_for(lambda: h.states()[-1] == "connected", what="answering again")


def test_port_vanishing_and_coming_back_is_recovered_and_reported() -> None:
    with harness(reopen_interval=0.1) as h:
        assert h.statuses[0].sam_id == "05.01-20101206-0000123456-0987654321"
        h.sim.unplug()
        wait_for(lambda: "port_lost" in h.states(), what="port_lost status")
        time.sleep(0.3)  # stays lost while unplugged
        assert h.states()[-1] == "port_lost"
        h.sim.replug()
        wait_for(lambda: "recovered" in h.states(), what="recovered status")
        recovered = [s for s in h.statuses if s.state is ReaderState.RECOVERED][-1]
        assert recovered.sam_id is not None and recovered.stats.port_losses == 1
        read = h.present_and_read(sample_card())
        assert read.layout is Layout.RESIDENT


def test_missing_port_is_reported_unavailable_and_picked_up_later() -> None:
    sim = IdReaderSimulator(baud=921600)
    port = sim.port_path  # not created yet
    states: list[str] = []
    from drivers.idcard.reader import IdCardReader

    reader = IdCardReader(
        port, lambda read: None, lambda s: states.append(s.state.value), reopen_interval=0.05
    )
    reader.start()
    try:
        wait_for(lambda: "port_unavailable" in states, what="port_unavailable")
        sim.start()
        wait_for(lambda: "connected" in states, what="connected once the port exists")
    finally:
        reader.stop()
        sim.stop()


def test_no_personal_data_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    card = resident_card(5, name_len=3)
    with harness() as h:
        for fault in Fault:
            h.sim.inject(fault, command="read", code=0x41, delay=0.1)
        h.sim.inject(Fault.BAD_CHECKSUM, command="read")
        h.present_and_read(card)
        h.present_and_read(card)
        h.sim.unplug()
        wait_for(lambda: "port_lost" in h.states(), what="port lost")
    text = caplog.text + "".join(repr(r) for r in h.cards)
    for secret in (card.id_number, card.name, card.address, card.id_number[6:14]):
        assert secret not in text


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    readers_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_readers_test_prints_masked_fields(capsys: pytest.CaptureFixture[str]) -> None:
    card = sample_card()
    with IdReaderSimulator(baud=115200) as sim:
        sim.present(card)
        assert _cli(["readers", "test", sim.port_path, "--timeout", "20"]) == 0
    out = capsys.readouterr().out
    assert "110101********1217" in out and "张*" in out and "card read in" in out
    assert card.id_number not in out and "张三" not in out


def test_cli_readers_test_json_and_failures(capsys: pytest.CaptureFixture[str]) -> None:
    with IdReaderSimulator(baud=921600) as sim:
        sim.present(sample_card(valid_until="20200101", valid_from="20100101"))
        assert _cli(["readers", "test", sim.port_path, "--json"]) == 0
        out = capsys.readouterr().out
        assert '"check": "expired"' in out and '"read_ms"' in out
        assert _cli(["readers", "test", sim.port_path, "--timeout", "0.5"]) == 1
        assert "no card read within 0.5 s" in capsys.readouterr().err
    assert _cli(["readers", "test", "/dev/lockgw-no-such-port", "--timeout", "5"]) == 1
    assert "cannot open /dev/lockgw-no-such-port" in capsys.readouterr().err

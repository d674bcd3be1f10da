"""Identity records from card text blocks: checks, card types, masking."""

from __future__ import annotations

from datetime import date

import pytest

from drivers.idcard.identity import (
    NATIONS,
    CardType,
    IdentityError,
    IdentityReason,
    Sex,
    check_digit,
    is_valid_id_number,
    mask_id_number,
    mask_name,
    parse_identity,
    validate_id_number,
)
from firmware_sim.idcards import (
    FOREIGN_2017,
    FOREIGN_2023,
    HMT_PERMIT,
    VirtualCard,
    make_id_number,
    sample_card,
)
from tests.support.idcard import other_cards, resident_card

TODAY = date(2026, 6, 1)


def refused(card: VirtualCard, today: date | None = TODAY) -> IdentityError:
    with pytest.raises(IdentityError) as err:
        parse_identity(card.text_block(), today)
    # The reason never carries the number or the name.
    assert card.id_number not in str(err.value)
    if card.name:
        assert card.name not in str(err.value)
    return err.value


def test_published_example_numbers() -> None:
    # The GB 11643-1999 example and a widely cited one.
    assert check_digit("11010519491231002") == "X"
    assert is_valid_id_number("11010519491231002X")
    assert is_valid_id_number("440524188001010014")
    assert not is_valid_id_number("440524188001010015")
    assert not is_valid_id_number("11010519491231002x")  # lower-case x is not on cards


def test_valid_resident_card() -> None:
    card = sample_card()
    ident = parse_identity(card.text_block(), TODAY)
    assert ident.card_type is CardType.RESIDENT
    assert ident.name == "张三" and ident.sex is Sex.MALE and ident.nation == "汉"
    assert ident.birth == date(1990, 3, 7)
    assert ident.id_number == card.id_number
    assert ident.valid_until == date(2040, 1, 1)
    assert ident.address == card.address and ident.issuer == card.issuer


def test_wrong_check_digit_is_refused() -> None:
    card = sample_card()
    last = card.id_number[-1]
    card.id_number = card.id_number[:-1] + ("0" if last != "0" else "1")
    assert refused(card).reason is IdentityReason.BAD_CHECK_DIGIT


def test_bad_number_format_is_refused() -> None:
    assert (
        refused(sample_card(id_number="11010119900307121")).reason is IdentityReason.BAD_ID_FORMAT
    )
    assert (
        refused(sample_card(id_number="1101011990030712AX")).reason is IdentityReason.BAD_ID_FORMAT
    )


def test_birth_mismatch_is_refused() -> None:
    card = sample_card(birth="19900308")  # number says 19900307
    assert refused(card).reason is IdentityReason.BIRTH_MISMATCH


def test_sex_mismatch_is_refused() -> None:
    assert refused(sample_card(sex="2")).reason is IdentityReason.SEX_MISMATCH


def test_expired_and_not_yet_valid_cards_are_refused() -> None:
    err = refused(sample_card(valid_from="20100101", valid_until="20200101"))
    assert err.reason is IdentityReason.EXPIRED
    err = refused(sample_card(valid_from="20270101", valid_until="20470101"))
    assert err.reason is IdentityReason.NOT_YET_VALID
    # The last day of validity still counts.
    card = sample_card(valid_from="20060601", valid_until="20260601")
    assert parse_identity(card.text_block(), TODAY).valid_until == TODAY


def test_long_term_validity_has_no_end() -> None:
    card = sample_card(birth="19500101", id_number=make_id_number(date(1950, 1, 1), "110101", 5))
    card.valid_from, card.valid_until = "20100101", "长期"
    ident = parse_identity(card.text_block(), date(2090, 1, 1))
    assert ident.valid_until is None
    assert ident.masked()["valid_until"] == "长期"


def test_bad_dates_are_refused() -> None:
    assert refused(sample_card(valid_until="20401301")).reason is IdentityReason.BAD_DATE
    assert refused(sample_card(valid_from="2020-1-1")).reason is IdentityReason.BAD_DATE
    assert refused(sample_card(valid_until="20100101")).reason is IdentityReason.BAD_VALIDITY


@pytest.mark.parametrize("code", sorted(NATIONS))
def test_every_nation_code(code: str) -> None:
    ident = parse_identity(sample_card(nation=code).text_block(), TODAY)
    assert ident.nation_code == code and ident.nation == NATIONS[code]


def test_unknown_nation_and_sex_are_refused() -> None:
    assert refused(sample_card(nation="57")).reason is IdentityReason.UNKNOWN_NATION
    assert refused(sample_card(nation="")).reason is IdentityReason.UNKNOWN_NATION
    assert refused(sample_card(sex="0")).reason is IdentityReason.UNKNOWN_SEX


def test_female_card() -> None:
    birth = date(2001, 12, 31)
    card = sample_card(sex="2", birth="20011231", id_number=make_id_number(birth, "320102", 7, 2))
    assert parse_identity(card.text_block(), TODAY).sex is Sex.FEMALE


def test_missing_fields_are_refused() -> None:
    assert refused(sample_card(name="")).reason is IdentityReason.MISSING_FIELD
    assert refused(sample_card(address="")).reason is IdentityReason.MISSING_FIELD


def test_hmt_residence_permit() -> None:
    card = other_cards()[HMT_PERMIT]
    ident = parse_identity(card.text_block(), TODAY)
    assert ident.card_type is CardType.HMT_RESIDENCE_PERMIT
    assert ident.pass_number == "H12345678" and ident.issue_count == 1
    assert ident.nation_code == "" and ident.sex is Sex.FEMALE


def test_foreign_permanent_2017() -> None:
    card = other_cards()[FOREIGN_2017]
    ident = parse_identity(card.text_block(), TODAY)
    assert ident.card_type is CardType.FOREIGN_PERMANENT_2017
    assert ident.name_en == "SMITH, JOHN" and ident.name == "史密斯"
    assert ident.nationality == "USA" and ident.id_number == card.id_number
    card.birth = "19850506"
    assert refused(card).reason is IdentityReason.BIRTH_MISMATCH


def test_foreign_permanent_2023_long_english_name() -> None:
    card = other_cards()[FOREIGN_2023]
    ident = parse_identity(card.text_block(), TODAY)
    assert ident.card_type is CardType.FOREIGN_PERMANENT_2023
    assert ident.name_en == card.name_en  # 38 characters, across two fields
    assert ident.nationality == "GBR" and ident.display_name == card.name_en
    card.name_en = "A" * 34 + " " + "B" * 5  # the cut falls on a space
    assert parse_identity(card.text_block(), TODAY).name_en == card.name_en


def test_card_types_are_never_confused() -> None:
    # A permit number on a resident layout, a resident number on a permit layout.
    hmt = other_cards()[HMT_PERMIT]
    resident = sample_card(id_number=hmt.id_number, birth=hmt.birth, sex=hmt.sex)
    assert refused(resident).reason is IdentityReason.ID_TYPE_MISMATCH
    hmt.id_number = sample_card().id_number
    hmt.birth, hmt.sex = "19900307", "1"
    assert refused(hmt).reason is IdentityReason.ID_TYPE_MISMATCH
    # An unknown type marker is refused as such, never read as a resident card.
    block = bytearray(sample_card().text_block())
    block[248:250] = "Z".encode("utf-16-le")
    with pytest.raises(IdentityError) as err:
        parse_identity(bytes(block), TODAY)
    assert err.value.reason is IdentityReason.UNKNOWN_CARD_TYPE


def test_site_may_refuse_other_card_types() -> None:
    card = other_cards()[FOREIGN_2023]
    with pytest.raises(IdentityError) as err:
        parse_identity(card.text_block(), TODAY, accepted=frozenset({CardType.RESIDENT}))
    assert err.value.reason is IdentityReason.CARD_TYPE_NOT_ACCEPTED


def test_names_of_1_to_15_characters_and_addresses_up_to_35() -> None:
    for n in range(1, 16):
        card = resident_card(n, name_len=n, address_len=min(35, 2 * n + 5))
        ident = parse_identity(card.text_block(), TODAY)
        assert ident.name == card.name and ident.address == card.address


def test_masking() -> None:
    assert mask_id_number("11010519491231002X") == "110105********002X"
    assert mask_id_number("USA118850505001") == "USA118*****5001"
    assert mask_id_number("H12345678") == "*********"
    assert mask_name("张") == "*"
    assert mask_name("张三") == "张*"
    assert mask_name("欧阳锋") == "欧*锋"
    ident = parse_identity(sample_card().text_block(), TODAY)
    shown = " ".join(ident.masked().values()) + repr(ident) + str(ident)
    assert ident.id_number not in shown and ident.name not in shown
    assert ident.address not in shown


def test_validate_id_number_without_birth() -> None:
    validate_id_number("11010519491231002X")
    with pytest.raises(IdentityError) as err:
        validate_id_number("11010519491231002X", birth=date(1949, 12, 30))
    assert err.value.reason is IdentityReason.BIRTH_MISMATCH


def test_birth_in_the_future_is_refused() -> None:
    birth = date(2030, 1, 1)
    card = sample_card(birth="20300101", id_number=make_id_number(birth, "110101", 1))
    card.valid_from = "20200101"
    assert refused(card).reason is IdentityReason.BIRTH_IN_FUTURE

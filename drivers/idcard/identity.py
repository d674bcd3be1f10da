"""The identity on a card: typed record, validation, code tables, masking.

``parse_identity`` turns the raw 256-byte text block into an :class:`Identity`
or raises :class:`IdentityError` with a :class:`IdentityReason` naming what is wrong.
Nothing is partly trusted: one bad field refuses the whole card.

Checks (resident cards and HK/Macao/Taiwan residence permits, which use the same
number scheme; the 2023 foreign permanent residence card likewise):

- the number is 17 digits and a check character by GB 11643 (ISO 7064
  MOD 11-2), its digits 7-14 equal the birth field, and the parity of digit 17
  matches the sex (odd: male);
- the number's prefix fits the card type (81/82/83 for permits, 9 for 2023
  foreign cards, neither for resident cards), so one card type is never read
  as another;
- dates are real calendar dates; ``check_validity`` refuses a card not yet
  valid or expired on the given day (``长期`` means no end, resident cards only).

The 2017 foreign permanent residence number (3 letters + 12 digits) has no
published check algorithm we rely on; its format and the birth date in it are
checked.

Error messages never contain personal data.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from drivers.idcard.textblock import Layout, RawText, TextBlockError, decode_text_block

LONG_TERM = "长期"

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_ID18 = re.compile(r"\d{17}[\dX]")
_FOREIGN15 = re.compile(r"[A-Z]{3}\d{12}")
_ALPHA3 = re.compile(r"[A-Z]{3}")
_DIGITS = re.compile(r"\d+")
_HMT_PREFIXES = ("81", "82", "83")

NATIONS: Mapping[str, str] = {
    "01": "汉",
    "02": "蒙古",
    "03": "回",
    "04": "藏",
    "05": "维吾尔",
    "06": "苗",
    "07": "彝",
    "08": "壮",
    "09": "布依",
    "10": "朝鲜",
    "11": "满",
    "12": "侗",
    "13": "瑶",
    "14": "白",
    "15": "土家",
    "16": "哈尼",
    "17": "哈萨克",
    "18": "傣",
    "19": "黎",
    "20": "傈僳",
    "21": "佤",
    "22": "畲",
    "23": "高山",
    "24": "拉祜",
    "25": "水",
    "26": "东乡",
    "27": "纳西",
    "28": "景颇",
    "29": "柯尔克孜",
    "30": "土",
    "31": "达斡尔",
    "32": "仫佬",
    "33": "羌",
    "34": "布朗",
    "35": "撒拉",
    "36": "毛南",
    "37": "仡佬",
    "38": "锡伯",
    "39": "阿昌",
    "40": "普米",
    "41": "塔吉克",
    "42": "怒",
    "43": "乌孜别克",
    "44": "俄罗斯",
    "45": "鄂温克",
    "46": "德昂",
    "47": "保安",
    "48": "裕固",
    "49": "京",
    "50": "塔塔尔",
    "51": "独龙",
    "52": "鄂伦春",
    "53": "赫哲",
    "54": "门巴",
    "55": "珞巴",
    "56": "基诺",
    "97": "其他",
    "98": "外国血统中国籍人士",
}


class CardType(enum.Enum):
    """Kinds of card read by a resident ID card module."""

    RESIDENT = "resident"
    HMT_RESIDENCE_PERMIT = "hmt_residence_permit"
    FOREIGN_PERMANENT_2017 = "foreign_permanent_2017"
    FOREIGN_PERMANENT_2023 = "foreign_permanent_2023"


_BY_LAYOUT = {
    Layout.RESIDENT: CardType.RESIDENT,
    Layout.HMT_RESIDENCE_PERMIT: CardType.HMT_RESIDENCE_PERMIT,
    Layout.FOREIGN_PERMANENT_2017: CardType.FOREIGN_PERMANENT_2017,
    Layout.FOREIGN_PERMANENT_2023: CardType.FOREIGN_PERMANENT_2023,
}


class Sex(enum.Enum):
    """GB/T 2261.1 sex codes as used on the cards."""

    MALE = "1"
    FEMALE = "2"


class IdentityReason(enum.Enum):
    """Why a card was refused."""

    BAD_TEXT = "bad_text"
    UNKNOWN_CARD_TYPE = "unknown_card_type"
    CARD_TYPE_NOT_ACCEPTED = "card_type_not_accepted"
    MISSING_FIELD = "missing_field"
    BAD_ID_FORMAT = "bad_id_format"
    BAD_CHECK_DIGIT = "bad_check_digit"
    ID_TYPE_MISMATCH = "id_type_mismatch"
    BIRTH_MISMATCH = "birth_mismatch"
    SEX_MISMATCH = "sex_mismatch"
    BAD_DATE = "bad_date"
    BIRTH_IN_FUTURE = "birth_in_future"
    UNKNOWN_SEX = "unknown_sex"
    UNKNOWN_NATION = "unknown_nation"
    BAD_FIELD = "bad_field"
    BAD_VALIDITY = "bad_validity"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"


class IdentityError(ValueError):
    """A card refused, with the reason; the message holds no personal data."""

    def __init__(self, reason: IdentityReason, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason.value}: {detail}")


@dataclass(frozen=True)
class Identity:
    """A validated card holder record. ``repr`` shows masked values only."""

    card_type: CardType
    name: str
    sex: Sex
    birth: date
    id_number: str
    valid_from: date
    valid_until: date | None  # None: 长期 (no expiry)
    issuer: str = ""
    address: str = ""
    nation_code: str = ""
    name_en: str = ""
    nationality: str = ""  # GB/T 2659 alpha-3 code (foreign cards)
    pass_number: str = ""  # HK/Macao/Taiwan travel permit number
    issue_count: int | None = None
    card_version: str = ""

    @property
    def nation(self) -> str:
        """The ethnic group's name (resident cards), else empty."""
        return NATIONS.get(self.nation_code, "")

    @property
    def display_name(self) -> str:
        """The Chinese name, or the English one when there is none."""
        return self.name or self.name_en

    def masked(self) -> dict[str, str]:
        """Fields fit to show a person (front desk, technician, logs of a test read)."""
        shown = {
            "card_type": self.card_type.value,
            "name": mask_name(self.display_name),
            "sex": "男" if self.sex is Sex.MALE else "女",
            "birth": f"{self.birth.year}-**-**",
            "id_number": mask_id_number(self.id_number),
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat() if self.valid_until else LONG_TERM,
        }
        if self.nation_code:
            shown["nation"] = self.nation
        if self.address:
            shown["address"] = mask_address(self.address)
        if self.issuer:
            shown["issuer"] = self.issuer
        if self.nationality:
            shown["nationality"] = self.nationality
        if self.pass_number:
            shown["pass_number"] = mask_id_number(self.pass_number)
        return shown

    def __repr__(self) -> str:
        return (
            f"Identity({self.card_type.value}, {mask_name(self.display_name)},"
            f" {mask_id_number(self.id_number)})"
        )

    __str__ = __repr__


def mask_id_number(number: str) -> str:
    """Keep the first 6 and last 4 characters; shorter numbers are masked whole."""
    if len(number) <= 10:
        return "*" * len(number)
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


def mask_name(name: str) -> str:
    """``张*`` / ``欧*锋`` / ``J**N``: first (and last, from 3 characters) kept."""
    if len(name) <= 1:
        return "*" * len(name)
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def mask_address(address: str) -> str:
    """Keep the first 6 characters (province and city, roughly)."""
    return address[:6] + "*" * max(0, min(len(address) - 6, 8))


def check_digit(first17: str) -> str:
    """GB 11643 / ISO 7064 MOD 11-2 check character for 17 digits."""
    if len(first17) != 17 or not first17.isdigit():
        raise IdentityError(IdentityReason.BAD_ID_FORMAT, "check digit needs 17 digits")
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def validate_id_number(number: str, birth: date | None = None, sex: Sex | None = None) -> None:
    """Check an 18-character number: format, check digit, birth date and sex parity."""
    if not _ID18.fullmatch(number):
        raise IdentityError(
            IdentityReason.BAD_ID_FORMAT, "number must be 17 digits and a check character"
        )
    if check_digit(number[:17]) != number[17]:
        raise IdentityError(IdentityReason.BAD_CHECK_DIGIT, "number check digit is wrong")
    if birth is not None and number[6:14] != f"{birth:%Y%m%d}":
        raise IdentityError(
            IdentityReason.BIRTH_MISMATCH, "birth date in the number differs from birth"
        )
    if sex is not None and (int(number[16]) % 2 == 1) != (sex is Sex.MALE):
        raise IdentityError(IdentityReason.SEX_MISMATCH, "sex digit of the number differs from sex")


def is_valid_id_number(number: str) -> bool:
    """True when format and check digit are right."""
    try:
        validate_id_number(number)
    except IdentityError:
        return False
    return True


def decode_card_text(text: bytes) -> RawText:
    """The text block's raw fields, or an IdentityError (unknown layout, bad text)."""
    try:
        return decode_text_block(text)
    except TextBlockError as exc:
        reason = (
            IdentityReason.UNKNOWN_CARD_TYPE if "layout" in str(exc) else IdentityReason.BAD_TEXT
        )
        raise IdentityError(reason, str(exc)) from None


def parse_identity(
    text: bytes | RawText,
    today: date | None = None,
    accepted: frozenset[CardType] = frozenset(CardType),
) -> Identity:
    """Parse and validate a card's text block; with ``today``, also its validity period."""
    raw = text if isinstance(text, RawText) else decode_card_text(text)
    card_type = _BY_LAYOUT[raw.layout]
    if card_type not in accepted:
        raise IdentityError(
            IdentityReason.CARD_TYPE_NOT_ACCEPTED, f"{card_type.value} cards are not accepted here"
        )
    parser = {
        CardType.RESIDENT: _resident,
        CardType.HMT_RESIDENCE_PERMIT: _hmt_permit,
        CardType.FOREIGN_PERMANENT_2017: _foreign_2017,
        CardType.FOREIGN_PERMANENT_2023: _foreign_2023,
    }[card_type]
    identity = parser(raw.fields)
    if identity.valid_until is not None and identity.valid_until <= identity.valid_from:
        raise IdentityError(IdentityReason.BAD_VALIDITY, "validity ends before it starts")
    if identity.valid_until is None and card_type is not CardType.RESIDENT:
        raise IdentityError(
            IdentityReason.BAD_VALIDITY, f"{LONG_TERM} validity on a non-resident card"
        )
    if today is not None:
        check_dates(identity, today)
    return identity


def check_dates(identity: Identity, today: date) -> None:
    """Refuse a card whose holder is born after ``today``, or not valid on ``today``."""
    if identity.birth > today:
        raise IdentityError(IdentityReason.BIRTH_IN_FUTURE, "birth date is in the future")
    check_validity(identity, today)


def check_validity(identity: Identity, today: date) -> None:
    """Refuse a card that is not yet valid or has expired on ``today``."""
    if today < identity.valid_from:
        raise IdentityError(IdentityReason.NOT_YET_VALID, f"card valid from {identity.valid_from}")
    if identity.valid_until is not None and today > identity.valid_until:
        raise IdentityError(IdentityReason.EXPIRED, f"card expired on {identity.valid_until}")


# -- per-layout parsers ------------------------------------------------------


def _required(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name, "")
    if not value:
        raise IdentityError(IdentityReason.MISSING_FIELD, f"field {name} is empty")
    return value


def _date(value: str, name: str) -> date:
    if len(value) != 8 or not value.isdigit():
        raise IdentityError(IdentityReason.BAD_DATE, f"field {name} is not YYYYMMDD")
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise IdentityError(
            IdentityReason.BAD_DATE, f"field {name} is not a calendar date"
        ) from None


def _until(value: str) -> date | None:
    return None if value == LONG_TERM else _date(value, "valid_until")


def _sex(fields: Mapping[str, str]) -> Sex:
    try:
        return Sex(fields.get("sex", ""))
    except ValueError:
        raise IdentityError(IdentityReason.UNKNOWN_SEX, "sex code is not 1 or 2") from None


def _count(value: str, name: str) -> int | None:
    if not value:
        return None
    if not _DIGITS.fullmatch(value):
        raise IdentityError(IdentityReason.BAD_FIELD, f"field {name} is not a number")
    return int(value)


def _common(fields: Mapping[str, str]) -> tuple[Sex, date, date, date | None]:
    sex = _sex(fields)
    birth = _date(_required(fields, "birth"), "birth")
    valid_from = _date(_required(fields, "valid_from"), "valid_from")
    valid_until = _until(_required(fields, "valid_until"))
    return sex, birth, valid_from, valid_until


def _resident(fields: Mapping[str, str]) -> Identity:
    name = _required(fields, "name")
    sex, birth, valid_from, valid_until = _common(fields)
    nation = fields.get("nation", "")
    if nation not in NATIONS:
        raise IdentityError(IdentityReason.UNKNOWN_NATION, "nation code not in GB 3304")
    number = _required(fields, "id_number")
    validate_id_number(number, birth, sex)
    if number.startswith(_HMT_PREFIXES) or number.startswith("9"):
        raise IdentityError(
            IdentityReason.ID_TYPE_MISMATCH,
            "number belongs to a permit or foreign card, not a resident card",
        )
    return Identity(
        card_type=CardType.RESIDENT,
        name=name,
        sex=sex,
        birth=birth,
        id_number=number,
        valid_from=valid_from,
        valid_until=valid_until,
        issuer=_required(fields, "issuer"),
        address=_required(fields, "address"),
        nation_code=nation,
    )


def _hmt_permit(fields: Mapping[str, str]) -> Identity:
    name = _required(fields, "name")
    sex, birth, valid_from, valid_until = _common(fields)
    number = _required(fields, "id_number")
    validate_id_number(number, birth, sex)
    if not number.startswith(_HMT_PREFIXES):
        raise IdentityError(
            IdentityReason.ID_TYPE_MISMATCH, "residence permit number must start with 81, 82 or 83"
        )
    return Identity(
        card_type=CardType.HMT_RESIDENCE_PERMIT,
        name=name,
        sex=sex,
        birth=birth,
        id_number=number,
        valid_from=valid_from,
        valid_until=valid_until,
        issuer=_required(fields, "issuer"),
        address=_required(fields, "address"),
        pass_number=_required(fields, "pass_number"),
        issue_count=_count(fields.get("issue_count", ""), "issue_count"),
    )


def _nationality(fields: Mapping[str, str]) -> str:
    value = fields.get("nationality", "")
    if not _ALPHA3.fullmatch(value):
        raise IdentityError(IdentityReason.BAD_FIELD, "nationality is not a 3-letter code")
    return value


def _foreign_2017(fields: Mapping[str, str]) -> Identity:
    name_en = _required(fields, "name_en")
    sex, birth, valid_from, valid_until = _common(fields)
    number = _required(fields, "id_number")
    if not _FOREIGN15.fullmatch(number):
        raise IdentityError(IdentityReason.BAD_ID_FORMAT, "number must be 3 letters and 12 digits")
    if number[5:11] != f"{birth:%y%m%d}":
        raise IdentityError(
            IdentityReason.BIRTH_MISMATCH, "birth date in the number differs from birth"
        )
    return Identity(
        card_type=CardType.FOREIGN_PERMANENT_2017,
        name=fields.get("name", ""),
        sex=sex,
        birth=birth,
        id_number=number,
        valid_from=valid_from,
        valid_until=valid_until,
        issuer=fields.get("issuer_code", ""),
        name_en=name_en,
        nationality=_nationality(fields),
        card_version=fields.get("card_version", ""),
    )


def _join_english_name(first: str, rest: str) -> str:
    # The name is cut at 35 characters into two fields that were trimmed; a
    # first part shorter than 35 had trailing spaces, i.e. the cut was at a space.
    if rest and len(first) < 35:
        return f"{first} {rest}"
    return first + rest


def _foreign_2023(fields: Mapping[str, str]) -> Identity:
    name_en = _join_english_name(fields.get("name_en", ""), fields.get("name_en_ext", ""))
    if not name_en:
        raise IdentityError(IdentityReason.MISSING_FIELD, "field name_en is empty")
    sex, birth, valid_from, valid_until = _common(fields)
    number = _required(fields, "id_number")
    validate_id_number(number, birth, None)
    if not number.startswith("9"):
        raise IdentityError(
            IdentityReason.ID_TYPE_MISMATCH, "2023 foreign card number must start with 9"
        )
    return Identity(
        card_type=CardType.FOREIGN_PERMANENT_2023,
        name=fields.get("name", ""),
        sex=sex,
        birth=birth,
        id_number=number,
        valid_from=valid_from,
        valid_until=valid_until,
        name_en=name_en,
        nationality=_nationality(fields),
        issue_count=_count(fields.get("renewal_count", ""), "renewal_count"),
    )

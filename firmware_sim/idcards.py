"""Virtual ID cards for the reader simulator.

Text blocks are built here independently of ``drivers.idcard`` (offsets written
out again from the protocol contract), so a layout mistake in the driver shows
up as a failed round trip instead of cancelling itself out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"

RESIDENT = "resident"
HMT_PERMIT = "hmt_residence_permit"
FOREIGN_2017 = "foreign_permanent_2017"
FOREIGN_2023 = "foreign_permanent_2023"
CARD_TYPES = (RESIDENT, HMT_PERMIT, FOREIGN_2017, FOREIGN_2023)

# (offset, bytes) of each field per card type.
_LAYOUTS: dict[str, dict[str, tuple[int, int]]] = {
    RESIDENT: {
        "name": (0, 30),
        "sex": (30, 2),
        "nation": (32, 4),
        "birth": (36, 16),
        "address": (52, 70),
        "id_number": (122, 36),
        "issuer": (158, 30),
        "valid_from": (188, 16),
        "valid_until": (204, 16),
    },
    HMT_PERMIT: {
        "name": (0, 30),
        "sex": (30, 2),
        "birth": (36, 16),
        "address": (52, 70),
        "id_number": (122, 36),
        "issuer": (158, 30),
        "valid_from": (188, 16),
        "valid_until": (204, 16),
        "pass_number": (220, 18),
        "issue_count": (238, 4),
        "marker": (248, 2),
    },
    FOREIGN_2017: {
        "name_en": (0, 120),
        "sex": (120, 2),
        "id_number": (122, 30),
        "nationality": (152, 6),
        "name": (158, 30),
        "valid_from": (188, 16),
        "valid_until": (204, 16),
        "birth": (220, 16),
        "card_version": (236, 4),
        "issuer": (240, 8),
        "marker": (248, 2),
    },
    FOREIGN_2023: {
        "name": (0, 30),
        "sex": (30, 2),
        "issue_count": (32, 4),
        "birth": (36, 16),
        "name_en": (52, 70),
        "id_number": (122, 36),
        "valid_from": (188, 16),
        "valid_until": (204, 16),
        "name_en_ext": (220, 22),
        "nationality": (242, 6),
        "marker": (248, 2),
    },
}
_MARKERS = {HMT_PERMIT: "J", FOREIGN_2017: "I", FOREIGN_2023: "Y"}


def check_digit(first17: str) -> str:
    """GB 11643 (ISO 7064 MOD 11-2) check character for 17 digits."""
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def make_id_number(birth: date, region: str = "110101", seq: int = 1, sex: int = 1) -> str:
    """An 18-character number with a correct check digit.

    ``seq`` (0-99) is the order code's first two digits; the third is chosen so
    its parity matches ``sex`` (odd for male), as on real cards. Regions 81/82/83
    give Hong Kong / Macao / Taiwan permit numbers; a leading 9 the 2023 foreign
    permanent residence format.
    """
    third = 1 if sex == 1 else 2
    first17 = f"{region}{birth:%Y%m%d}{seq % 100:02d}{third}"
    return first17 + check_digit(first17)


def make_foreign_2017_number(nationality: str, birth: date, province: str = "11") -> str:
    """A 15-character 2017-layout permanent residence number (format only)."""
    return f"{nationality[:3].upper()}{province}{birth:%y%m%d}0010"


@dataclass
class VirtualCard:
    """A card the simulator can present: every text field and a photo.

    Dates are ``YYYYMMDD`` strings (or ``长期`` for ``valid_until``) so tests can
    also present malformed cards. ``raw_text`` overrides the built block.
    """

    name: str
    sex: str
    nation: str
    birth: str
    address: str
    id_number: str
    issuer: str
    valid_from: str
    valid_until: str
    photo: bytes = b"WL" + bytes(1022)
    photo_format: str = "wlt"
    card_type: str = RESIDENT
    name_en: str = ""
    nationality: str = ""
    pass_number: str = ""
    issue_count: str = ""
    card_version: str = ""
    raw_text: bytes | None = None

    def __repr__(self) -> str:
        return f"VirtualCard({self.card_type})"

    def text_block(self) -> bytes:
        """The 256-byte UCS-2 LE block as a real card would give it."""
        if self.raw_text is not None:
            return self.raw_text
        layout = _LAYOUTS[self.card_type]
        values = {
            "name": self.name,
            "sex": self.sex,
            "nation": self.nation,
            "birth": self.birth,
            "address": self.address,
            "id_number": self.id_number,
            "issuer": self.issuer,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
            "name_en": self.name_en[:35],
            "name_en_ext": self.name_en[35:],
            "nationality": self.nationality,
            "pass_number": self.pass_number,
            "issue_count": self.issue_count,
            "card_version": self.card_version,
            "marker": _MARKERS.get(self.card_type, ""),
        }
        if self.card_type == FOREIGN_2017:
            values["name_en"] = self.name_en
        block = bytearray("\u0020".encode("utf-16-le") * 128)
        for key, (off, size) in layout.items():
            raw = values[key].encode("utf-16-le")
            if len(raw) > size:
                raise ValueError(f"field {key} too long for the card: {len(raw)} > {size} bytes")
            block[off : off + len(raw)] = raw
        return bytes(block)


def sample_card(**overrides: object) -> VirtualCard:
    """A valid resident card (valid 2020-2040) with optional field overrides."""
    birth = date(1990, 3, 7)
    fields: dict[str, object] = {
        "name": "张三",
        "sex": "1",
        "nation": "01",
        "birth": f"{birth:%Y%m%d}",
        "address": "北京市东城区景山前街4号",
        "id_number": make_id_number(birth, "110101", 12, 1),
        "issuer": "北京市公安局东城分局",
        "valid_from": "20200101",
        "valid_until": "20400101",
    }
    fields.update(overrides)
    return VirtualCard(**fields)  # type: ignore[arg-type]

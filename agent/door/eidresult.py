"""What an ``eid.result`` says, checked like a card (no I/O).

The platform's answer is signed, but the identity in it is still validated the
way a card's is before anything is decided on it: the number's GB 11643 check
character, the birth date in the number against ``birth`` (a real date, not in
the future), the sex digit against ``sex``, a known nation code, and
``valid_until`` (when given) not passed. One bad field refuses the whole answer.
Error texts never hold personal data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from drivers.idcard.identity import (
    LONG_TERM,
    NATIONS,
    IdentityError,
    Sex,
    mask_id_number,
    mask_name,
    validate_id_number,
)
from drivers.idcard.identity import (
    IdentityReason as Reason,
)


@dataclass(frozen=True)
class EidIdentity:
    """A person as the identity service vouched for them; ``repr`` is masked."""

    name: str = field(repr=False)
    sex: Sex
    nation_code: str
    birth: dt.date
    id_number: str = field(repr=False)
    address: str = field(default="", repr=False)
    valid_until: dt.date | None = None  # None: not given, or 长期

    def __repr__(self) -> str:
        return f"EidIdentity({mask_name(self.name)}, {mask_id_number(self.id_number)})"

    __str__ = __repr__


@dataclass(frozen=True)
class EidAnswer:
    """The outcome of one request: verified with the identity, or failed with the error."""

    request_id: str
    verified: bool
    error: str = ""
    identity: EidIdentity | None = None


def read_result(body: dict[str, Any], today: dt.date) -> EidAnswer:
    """Turn a schema-checked ``eid.result`` body into an answer.

    A verified result whose identity does not validate becomes a failed answer
    with ``error`` ``identity_invalid: <reason>`` (the caller counts it).
    """
    request_id = str(body["request_id"])
    if body["status"] != "verified":
        return EidAnswer(request_id, False, str(body.get("error") or "failed")[:200])
    try:
        identity = parse_eid_identity(body["identity"], today)
    except IdentityError as exc:
        return EidAnswer(request_id, False, f"identity_invalid: {exc.reason.value}")
    return EidAnswer(request_id, True, "", identity)


def parse_eid_identity(fields: dict[str, Any], today: dt.date) -> EidIdentity:
    """Validate the ``identity`` object of a verified result; IdentityError names the problem."""
    name = _text(fields, "name")
    if not name:
        raise IdentityError(Reason.MISSING_FIELD, "identity.name is empty")
    sex_code = _text(fields, "sex")
    if sex_code not in ("1", "2"):
        raise IdentityError(Reason.UNKNOWN_SEX, "identity.sex must be 1 or 2")
    sex = Sex(sex_code)
    nation = _text(fields, "nation")
    if nation not in NATIONS:
        raise IdentityError(Reason.UNKNOWN_NATION, "identity.nation is not a GB 3304 code")
    birth = _date(_text(fields, "birth"), "identity.birth")
    if birth > today:
        raise IdentityError(Reason.BIRTH_IN_FUTURE, "identity.birth is in the future")
    number = _text(fields, "id_number")
    validate_id_number(number, birth, sex)
    until_text = _text(fields, "valid_until")
    valid_until = None
    if until_text and until_text != LONG_TERM:
        valid_until = _date(until_text, "identity.valid_until")
        if today > valid_until:
            raise IdentityError(Reason.EXPIRED, "identity valid_until has passed")
    return EidIdentity(
        name=name,
        sex=sex,
        nation_code=nation,
        birth=birth,
        id_number=number,
        address=_text(fields, "address"),
        valid_until=valid_until,
    )


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name, "")
    if not isinstance(value, str):
        raise IdentityError(Reason.BAD_FIELD, f"identity.{name} is not a string")
    return value.strip()


def _date(value: str, name: str) -> dt.date:
    if len(value) != 8 or not value.isdigit():
        raise IdentityError(Reason.BAD_DATE, f"{name} is not YYYYMMDD")
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise IdentityError(Reason.BAD_DATE, f"{name} is not a calendar date") from None

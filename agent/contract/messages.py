"""The body envelope of central-link-v1 and the schema of every message type.

``{"v":1,"id":uuid4,"type","gw","ts","seq"?,"exp"?,"body":{}}``: ``seq`` on
gateway messages, ``exp`` on commands. Bodies are checked per type with
pydantic models that allow extra fields (the contract lets either side add
fields). Errors name the type and the field and never quote the value, because
values may be personal data.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

GATEWAY_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")

COMMAND_TYPES = frozenset(
    {"grant.put", "grant.revoke", "grant.sync", "lock.unlock", "sync.ack", "ping", "eid.result"}
)
# Gateway requests that a person at the door waits on (topic P/req, sent first).
REQUEST_TYPES = frozenset({"eid.verify"})
EID_MAX_WAIT_S = 10.0  # contract section 6: answer_by is at most 10 s after at
EVENT_TYPES = frozenset(
    {
        "checkin.verified",
        "door.opened",
        "access.denied",
        "door.state",
        "lock.status",
        "outbox.dropped",
    }
)
ALERT_TYPES = frozenset(
    {
        "alert.identity_mismatch",
        "alert.unregistered_occupant",
        "alert.door_forced",
        "alert.tamper",
        "alert.brute_force",
        "alert.lock_offline",
        # extra types (documented in docs/asyncapi.yaml)
        "alert.door_held_open",
        "alert.unknown_card",
        "alert.gateway_incident",
        "alert.outbox_near_full",
    }
)
# Extra event/alert types other parts may add must look like this (and be documented).
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class MessageError(ValueError):
    """A message or body does not fit the contract; ``field`` names the place."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def topic_kind(msg_type: str) -> Literal["req", "evt", "alert", "ack"]:
    """The up-topic suffix a gateway message of ``msg_type`` goes to."""
    if msg_type in REQUEST_TYPES:
        return "req"
    if msg_type == "ack":
        return "ack"
    if msg_type.startswith("alert."):
        return "alert"
    return "evt"


def utc_now() -> dt.datetime:
    """Current time, UTC, second resolution is not assumed."""
    return dt.datetime.now(dt.UTC)


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``."""
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(value: object, field: str = "ts") -> dt.datetime:
    """Parse an RFC 3339 UTC time (``Z`` or ``+00:00``); MessageError otherwise."""
    if not isinstance(value, str) or not re.fullmatch(
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)", value
    ):
        raise MessageError(f"{field}: not an RFC 3339 UTC time", field)
    text = value.replace("Z", "+00:00")
    # fromisoformat in 3.11 takes at most 6 fraction digits.
    text = re.sub(r"\.(\d{6})\d+", r".\1", text)
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise MessageError(f"{field}: not a valid date/time", field) from None


def make_envelope(
    msg_type: str,
    gw: str,
    body: dict[str, Any],
    *,
    seq: int | None = None,
    exp: dt.datetime | None = None,
    msg_id: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """A complete envelope; ``seq`` for gateway messages, ``exp`` for commands."""
    env: dict[str, Any] = {
        "v": 1,
        "id": msg_id or str(uuid.uuid4()),
        "type": msg_type,
        "gw": gw,
        "ts": format_time(now or utc_now()),
    }
    if seq is not None:
        env["seq"] = seq
    if exp is not None:
        env["exp"] = format_time(exp)
    env["body"] = body
    return env


# --- body models -------------------------------------------------------------

_Str = Annotated[str, Field(min_length=1, max_length=256)]
_Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
_Time = Annotated[
    str, Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$")
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class GrantGuest(_Body):
    guest_id: _Id
    id_number: Annotated[str, Field(pattern=r"^[0-9]{17}[0-9X]$|^[A-Z0-9]{6,20}$")]
    name: _Str
    face_jpeg_b64: Annotated[str, Field(min_length=4, max_length=2_000_000)] | None = None


class GrantPut(_Body):
    grant_id: _Id
    room: _Str
    locks: Annotated[list[_Id], Field(min_length=1, max_length=64)]
    valid_from: _Time
    valid_until: _Time
    guests: Annotated[list[GrantGuest], Field(min_length=1, max_length=32)]
    pin: Annotated[str, Field(pattern=r"^[0-9]{4,12}$")] | None = None
    policy: dict[str, Any] | None = None


class GrantRevoke(_Body):
    grant_id: _Id
    reason: _Str


class GrantSync(_Body):
    grants: Annotated[list[GrantPut], Field(max_length=10_000)]
    # Revision 1.1: a sync in parts (all three, or none for one complete part).
    sync_id: _Id | None = None
    part: Annotated[StrictInt, Field(ge=1, le=10_000)] | None = None
    parts: Annotated[StrictInt, Field(ge=1, le=10_000)] | None = None


class LockUnlock(_Body):
    lock: _Id
    seconds: Annotated[StrictInt, Field(ge=1, le=600)] | Annotated[float, Field(gt=0, le=600)]
    reason: _Str


class SyncAck(_Body):
    through_seq: Annotated[StrictInt, Field(ge=0)]


class Ping(_Body):
    pass


_Sex = Literal["1", "2"]
_Date8 = Annotated[str, Field(pattern=r"^\d{8}$")]


class EidIdentity(_Body):
    name: _Str
    sex: _Sex
    nation: Annotated[str, Field(max_length=64)]
    birth: _Date8
    id_number: Annotated[str, Field(pattern=r"^[0-9]{17}[0-9X]$")]
    address: Annotated[str, Field(max_length=256)] | None = None
    valid_until: Annotated[str, Field(pattern=r"^(\d{8}|长期)$")] | None = None


class EidResult(_Body):
    request_id: _Id
    status: Literal["verified", "failed"]
    error: Annotated[str, Field(max_length=512)] | None = None
    identity: EidIdentity | None = None


class EidVerify(_Body):
    request_id: _Id
    lock: _Id
    code: Annotated[str, Field(min_length=1, max_length=1024)]
    live_jpeg_b64: Annotated[str, Field(min_length=4, max_length=700_000)]
    at: _Time
    answer_by: _Time


class Ack(_Body):
    cmd_id: Annotated[str, Field(min_length=1, max_length=128)]
    status: Literal["ok", "rejected"]
    error: Annotated[str, Field(max_length=512)] | None = None


class _Event(_Body):
    at: _Time


class CheckinVerified(_Event):
    lock: _Id
    room: _Str
    grant_id: _Id
    guest_id: _Id
    name: _Str
    sex: str
    nation: str
    birth: str
    address: str
    id_number: _Str
    issuer: str
    valid_from: str
    valid_until: str
    card_photo_b64: str
    card_photo_format: Literal["wlt", "jpeg", "png"]
    live_jpeg_b64: str
    face_distance: float
    face_threshold: float
    liveness: Any


class CheckinVerifiedEid(_Event):
    """``checkin.verified`` with ``card_type`` ``eid``: the identity from ``eid.result``,
    no card photo (contract section 6)."""

    lock: _Id
    room: _Str
    grant_id: _Id
    guest_id: _Id
    card_type: Literal["eid"]
    name: _Str
    sex: str
    nation: str
    birth: str
    id_number: _Str
    live_jpeg_b64: str
    face_distance: float
    face_threshold: float
    liveness: Any


class DoorOpened(_Event):
    lock: _Id
    method: Annotated[list[str], Field(min_length=1)]
    grant_id: _Id | None = None
    remote: Any = None


class AccessDenied(_Event):
    lock: _Id
    reason: _Str


class DoorStateEvent(_Event):
    lock: _Id
    state: Literal["closed", "open", "forced", "held_open"]


class LockStatus(_Event):
    lock: _Id
    online: StrictBool
    tamper: StrictBool


class OutboxDropped(_Event):
    seqs: Annotated[
        list[Annotated[list[StrictInt], Field(min_length=2, max_length=2)]], Field(min_length=1)
    ]
    count: Annotated[StrictInt, Field(ge=1)]
    types: dict[str, int]


class Alert(_Event):
    lock: _Id | None = None


class OutboxNearFull(Alert):
    bytes: Annotated[StrictInt, Field(ge=0)]
    max_bytes: Annotated[StrictInt, Field(ge=1)]


COMMAND_BODIES: dict[str, type[_Body]] = {
    "grant.put": GrantPut,
    "grant.revoke": GrantRevoke,
    "grant.sync": GrantSync,
    "lock.unlock": LockUnlock,
    "sync.ack": SyncAck,
    "ping": Ping,
    "eid.result": EidResult,
}
GATEWAY_BODIES: dict[str, type[_Body]] = {
    "ack": Ack,
    "checkin.verified": CheckinVerified,
    "door.opened": DoorOpened,
    "access.denied": AccessDenied,
    "door.state": DoorStateEvent,
    "lock.status": LockStatus,
    "outbox.dropped": OutboxDropped,
    "alert.outbox_near_full": OutboxNearFull,
    "eid.verify": EidVerify,
}


def validate_body(msg_type: str, body: object, *, command: bool) -> None:
    """Check ``body`` against the schema of ``msg_type``; MessageError names the field."""
    if not isinstance(body, dict):
        raise MessageError(f"{msg_type}: body must be an object", "body")
    if command:
        model = COMMAND_BODIES.get(msg_type)
        if model is None:
            raise MessageError(f"unknown command type {msg_type!r}", "type")
    else:
        model = GATEWAY_BODIES.get(msg_type)
        if msg_type == "checkin.verified" and body.get("card_type") == "eid":
            model = CheckinVerifiedEid
        if model is None:
            if not _TYPE_RE.match(msg_type):
                raise MessageError(f"gateway message type {msg_type!r} is not well formed", "type")
            model = Alert if msg_type.startswith("alert.") else _Event
    try:
        model.model_validate(body)
    except ValidationError as exc:
        raise MessageError(_describe(msg_type, exc), _first_loc(exc)) from None
    if msg_type == "door.opened" and body.get("grant_id") is None and body.get("remote") is None:
        raise MessageError("door.opened: body needs grant_id or remote", "body.grant_id")
    if msg_type == "eid.result" and (body["status"] == "verified") != (
        body.get("identity") is not None
    ):
        raise MessageError(
            "eid.result: body.identity is required when verified and only then", "body.identity"
        )
    if msg_type == "eid.verify":
        wait = (parse_time(body["answer_by"]) - parse_time(body["at"])).total_seconds()
        if not 0 < wait <= EID_MAX_WAIT_S:
            raise MessageError(
                f"eid.verify: body.answer_by must be after at by at most {EID_MAX_WAIT_S:g} s",
                "body.answer_by",
            )
    if msg_type in ("grant.put",) or msg_type == "grant.sync":
        grants = [body] if msg_type == "grant.put" else body["grants"]
        for i, grant in enumerate(grants):
            where = "body" if msg_type == "grant.put" else f"body.grants.{i}"
            if parse_time(grant["valid_until"]) <= parse_time(grant["valid_from"]):
                raise MessageError(
                    f"{msg_type}: {where}.valid_until must be after valid_from",
                    f"{where}.valid_until",
                )
        if msg_type == "grant.sync":
            split = [body.get(k) is None for k in ("sync_id", "part", "parts")]
            if any(split) and not all(split):
                raise MessageError(
                    "grant.sync: body.sync_id, body.part and body.parts go together",
                    "body.parts",
                )
            if not any(split) and body["part"] > body["parts"]:
                raise MessageError("grant.sync: body.part is past body.parts", "body.part")
            ids = [g["grant_id"] for g in grants]
            if len(ids) != len(set(ids)):
                raise MessageError(
                    "grant.sync: body.grants has a duplicate grant_id", "body.grants"
                )


def validate_command(env: object, gateway_id: str) -> dict[str, Any]:
    """Check a command envelope (but not exp/replay, which need time and state)."""
    envelope = _check_envelope(env)
    if envelope["type"] not in COMMAND_TYPES:
        raise MessageError(f"unknown command type {envelope['type']!r}", "type")
    if "seq" in envelope:
        raise MessageError(f"{envelope['type']}: commands carry no seq", "seq")
    if "exp" not in envelope:
        raise MessageError(f"{envelope['type']}: command without exp", "exp")
    parse_time(envelope["exp"], "exp")
    if envelope["gw"] != gateway_id:
        raise MessageError(f"{envelope['type']}: gw is another gateway's id", "gw")
    validate_body(envelope["type"], envelope["body"], command=True)
    return envelope


def validate_gateway_message(env: object) -> dict[str, Any]:
    """Check a gateway → platform envelope (events, alerts, acks)."""
    envelope = _check_envelope(env)
    seq = envelope.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise MessageError(f"{envelope['type']}: seq must be an integer >= 1", "seq")
    if "exp" in envelope:
        raise MessageError(f"{envelope['type']}: gateway messages carry no exp", "exp")
    validate_body(envelope["type"], envelope["body"], command=False)
    return envelope


def _check_envelope(env: object) -> dict[str, Any]:
    if not isinstance(env, dict):
        raise MessageError("message is not a JSON object", "")
    allowed = {"v", "id", "type", "gw", "ts", "seq", "exp", "body"}
    for name in ("v", "id", "type", "gw", "ts", "body"):
        if name not in env:
            raise MessageError(f"envelope: missing {name}", name)
    extra = sorted(set(env) - allowed)
    if extra:
        raise MessageError(f"envelope: unknown member {extra[0]!r}", extra[0])
    if env["v"] != 1 or isinstance(env["v"], bool):
        raise MessageError("envelope: v must be 1", "v")
    if not isinstance(env["id"], str) or not _is_uuid4(env["id"]):
        raise MessageError("envelope: id must be a UUID version 4", "id")
    if not isinstance(env["type"], str) or not env["type"]:
        raise MessageError("envelope: type must be a non-empty string", "type")
    if not isinstance(env["gw"], str) or not GATEWAY_ID_RE.match(env["gw"]):
        raise MessageError("envelope: gw is not a valid gateway id", "gw")
    parse_time(env["ts"], "ts")
    if not isinstance(env["body"], dict):
        raise MessageError(f"{env['type']}: body must be an object", "body")
    return env


def _is_uuid4(value: str) -> bool:
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return parsed.version == 4 and str(parsed) == value.lower()


def _first_loc(exc: ValidationError) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    return "body." + ".".join(str(p) for p in errors[0]["loc"]) if errors else "body"


def _describe(msg_type: str, exc: ValidationError) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err["loc"])
        # Drop union-branch noise ("int", "float") from the location.
        parts.append(f"body.{loc}: {err['msg']}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{msg_type}: " + "; ".join(parts) + more


@dataclass(frozen=True)
class Command:
    """A verified, schema-checked command."""

    id: str
    type: str
    exp: dt.datetime
    body: dict[str, Any]
    jws_compact: str
    signer_kid: str


_CODE_RE = re.compile(r"^[a-z][a-z0-9_]{1,40}$")


class CommandRejected(Exception):
    """Raised by an applier to refuse a command (no personal data in the text).

    ``code`` is the contract's reason code the ack's ``error`` starts with
    (``unknown_lock``, ``photo_too_large``, …; documented in docs/asyncapi.yaml);
    ``detail`` is for people. A first argument that is not code-shaped is kept as
    the detail of the generic code ``refused``.
    """

    def __init__(self, code: str, detail: str = "") -> None:
        if not _CODE_RE.match(code):
            code, detail = "refused", code if not detail else f"{code} {detail}"
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)

"""Contract bodies of the gateway's door records (no I/O: dicts for the outbox).

``checkin.verified`` carries the card as read (it is sealed to the platform);
``access.denied`` carries the presented number masked to its first 6 and last 4.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from agent.contract.messages import format_time
from agent.door.eidresult import EidIdentity
from drivers.idcard.identity import Identity, Sex, mask_id_number


def iso(ts: float) -> str:
    """RFC 3339 UTC with milliseconds, from epoch seconds."""
    return format_time(dt.datetime.fromtimestamp(ts, dt.UTC))


def _card_date(value: dt.date | None) -> str:
    return "长期" if value is None else value.strftime("%Y%m%d")


def checkin_verified(
    *,
    lock: str,
    room: str,
    grant_id: str,
    guest_id: str,
    identity: Identity,
    card_photo: bytes,
    card_photo_format: str,
    live_jpeg: bytes,
    face_distance: float,
    face_threshold: float,
    liveness: dict[str, Any],
    at: float,
) -> dict[str, Any]:
    """The real-name registration of one person at the door."""
    return {
        "lock": lock,
        "room": room,
        "grant_id": grant_id,
        "guest_id": guest_id,
        "card_type": identity.card_type.value,
        "name": identity.name,
        "sex": "1" if identity.sex is Sex.MALE else "2",
        "nation": identity.nation_code,
        "birth": identity.birth.strftime("%Y%m%d"),
        "address": identity.address,
        "id_number": identity.id_number,
        "issuer": identity.issuer,
        "valid_from": _card_date(identity.valid_from),
        "valid_until": _card_date(identity.valid_until),
        "card_photo_b64": base64.b64encode(card_photo).decode("ascii"),
        "card_photo_format": card_photo_format,
        "live_jpeg_b64": base64.b64encode(live_jpeg).decode("ascii"),
        "face_distance": round(face_distance, 4),
        "face_threshold": face_threshold,
        "liveness": liveness,
        "at": iso(at),
    }


def checkin_verified_eid(
    *,
    lock: str,
    room: str,
    grant_id: str,
    guest_id: str,
    identity: EidIdentity,
    live_jpeg: bytes,
    face_distance: float,
    face_threshold: float,
    liveness: dict[str, Any],
    request_id: str,
    at: float,
) -> dict[str, Any]:
    """The real-name registration of one person who showed the electronic ID: the
    identity fields from ``eid.result``, ``card_type`` ``eid``, no card photo."""
    body: dict[str, Any] = {
        "lock": lock,
        "room": room,
        "grant_id": grant_id,
        "guest_id": guest_id,
        "card_type": "eid",
        "name": identity.name,
        "sex": identity.sex.value,
        "nation": identity.nation_code,
        "birth": identity.birth.strftime("%Y%m%d"),
        "id_number": identity.id_number,
        "live_jpeg_b64": base64.b64encode(live_jpeg).decode("ascii"),
        "face_distance": round(face_distance, 4),
        "face_threshold": face_threshold,
        "liveness": liveness,
        "eid_request_id": request_id,
        "at": iso(at),
    }
    if identity.address:
        body["address"] = identity.address
    if identity.valid_until is not None:
        body["valid_until"] = identity.valid_until.strftime("%Y%m%d")
    return body


def door_opened(
    *,
    lock: str,
    method: list[str],
    at: float,
    grant_id: str | None = None,
    remote: str | None = None,
) -> dict[str, Any]:
    """An opening: by which factors, under which grant (or remotely, with the reason)."""
    body: dict[str, Any] = {"lock": lock, "method": method, "at": iso(at)}
    if grant_id is not None:
        body["grant_id"] = grant_id
    if remote is not None:
        body["remote"] = remote
    return body


def access_denied(
    *, lock: str, reason: str, at: float, id_number: str | None, method: str
) -> dict[str, Any]:
    """A refusal, with what was presented (the number masked)."""
    body: dict[str, Any] = {"lock": lock, "reason": reason, "at": iso(at), "presented": method}
    if id_number:
        body["id_number_masked"] = mask_id_number(id_number)
    return body

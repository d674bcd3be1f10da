"""Check-in grants kept offline: stored as signed, verified again at every use.

A grant arrives in a signed platform command (``grant.put`` or ``grant.sync``).
The command's JWS text is kept sealed with the local key (it holds names, ID
numbers and photos); the ``grants`` and ``grant_guests`` rows are only an index
for finding candidates: ID numbers appear there as keyed hashes, PINs likewise,
and no name at all. Every lookup re-verifies the signed text with the pinned
platform keys and takes validity, locks, PIN and ID number from what the
platform signed, so an edited row can narrow but never widen what opens.

Face templates are computed once per guest from the grant's photo and stored
sealed; the photo itself is never written anywhere but inside the sealed signed
text, which is needed to re-verify the signature. A grant past its end is
purged with its templates and, when no grant refers to it any more, its signed
text.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from agent.contract.keys import PlatformKeys
from agent.contract.limits import SYNC_PART_MAX_AGE_S
from agent.contract.messages import Command, parse_time
from agent.contract.seal import SealError, verify_jws
from agent.grants.model import GrantPolicy, VerifiedGuest
from agent.state.secretbox import SecretBox, SecretBoxError
from agent.state.store import Store
from drivers.idcard.identity import mask_id_number, mask_name

log = logging.getLogger(__name__)

_ID_CONTEXT = "guest-id-number"
_PIN_CONTEXT = "grant-pin"


class SyncPartRejected(Exception):
    """A ``grant.sync`` part that cannot be kept; ``code`` is the ack's reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class GrantIntegrityError(Exception):
    """A stored grant no longer verifies (edited, or sealed with another key): it opens nothing."""


@dataclass(frozen=True)
class GrantCounts:
    """What ``lockgw status`` shows."""

    grants: int
    active: int
    guests: int
    templates_ready: int


class GrantStore:
    """The offline grant store over the gateway's database."""

    def __init__(self, store: Store, box: SecretBox, platform_keys: PlatformKeys) -> None:
        self._store = store
        self._box = box
        self._keys = platform_keys

    # -- applying platform commands (inside the command's transaction) ----------------

    def apply(self, conn: sqlite3.Connection, command: Command) -> None:
        """Carry out ``grant.put``, ``grant.revoke`` or ``grant.sync`` on ``conn``."""
        now = time.time()
        if command.type == "grant.put":
            self._store_signed(conn, command)
            self._put(conn, command.id, command.body, now)
        elif command.type == "grant.revoke":
            conn.execute("DELETE FROM grants WHERE grant_id = ?", (command.body["grant_id"],))
        elif command.type == "grant.sync":
            if int(command.body.get("parts", 1)) == 1:
                conn.execute("DELETE FROM grants")
                if command.body["grants"]:
                    self._store_signed(conn, command)
                    for grant in command.body["grants"]:
                        self._put(conn, command.id, grant, now)
            else:
                self._sync_part(conn, command, now)
        else:
            raise ValueError(f"not a grant command: {command.type}")
        _delete_unreferenced(conn)

    def _sync_part(self, conn: sqlite3.Connection, command: Command, now: float) -> None:
        """Keep one part of a ``grant.sync`` in parts; with the last one, replace the set.

        Contract section 5: parts of one ``sync_id`` wait at most
        :data:`SYNC_PART_MAX_AGE_S` after the first; a new ``sync_id`` discards an
        incomplete older one; the union replaces every grant in this transaction.
        """
        sync_id, part, parts = (
            str(command.body["sync_id"]),
            int(command.body["part"]),
            int(command.body["parts"]),
        )
        conn.execute(
            "UPDATE grant_syncs SET state = 'expired' WHERE state = 'open' AND first_at < ?",
            (now - SYNC_PART_MAX_AGE_S,),
        )
        conn.execute(
            "DELETE FROM grant_syncs WHERE state != 'open' AND first_at < ?", (now - 86_400,)
        )
        row = conn.execute(
            "SELECT state, parts FROM grant_syncs WHERE sync_id = ?", (sync_id,)
        ).fetchone()
        if row is None:
            superseded = conn.execute(
                "UPDATE grant_syncs SET state = 'superseded' WHERE state = 'open'"
            ).rowcount
            if superseded:
                log.warning(
                    "incomplete grant.sync discarded by a newer one", extra={"sync_id": sync_id}
                )
            conn.execute(
                "INSERT INTO grant_syncs (sync_id, parts, first_at, state)"
                " VALUES (?, ?, ?, 'open')",
                (sync_id, parts, now),
            )
        elif row[0] != "open":
            code = {"applied": "sync_complete", "superseded": "sync_superseded"}.get(
                row[0], "sync_expired"
            )
            raise SyncPartRejected(code, f"grant.sync {sync_id}: {row[0]}, part {part} not kept")
        elif int(row[1]) != parts:
            raise SyncPartRejected(
                "invalid_body",
                f"grant.sync {sync_id}: body.parts is {parts}, the first part said {row[1]}",
            )
        conn.execute(
            "DELETE FROM grant_sync_parts WHERE sync_id IN"
            " (SELECT sync_id FROM grant_syncs WHERE state != 'open')"
        )
        if conn.execute(
            "SELECT 1 FROM grant_sync_parts WHERE sync_id = ? AND part = ?", (sync_id, part)
        ).fetchone():
            raise SyncPartRejected(
                "invalid_body", f"grant.sync {sync_id}: part {part} arrived twice"
            )
        sealed = self._box.seal(command.jws_compact.encode("ascii"), f"grant-jws:{command.id}")
        conn.execute(
            "INSERT INTO grant_sync_parts (sync_id, part, cmd_id, jws_sealed) VALUES (?, ?, ?, ?)",
            (sync_id, part, command.id, sealed),
        )
        stored = conn.execute(
            "SELECT part, cmd_id, jws_sealed FROM grant_sync_parts WHERE sync_id = ? ORDER BY part",
            (sync_id,),
        ).fetchall()
        if len(stored) < parts:
            log.info(
                "grant.sync part kept", extra={"sync_id": sync_id, "part": part, "parts": parts}
            )
            return
        union: list[tuple[str, bytes, list[dict[str, Any]]]] = []
        seen: set[str] = set()
        for n, cmd_id, part_sealed in stored:
            grants = (
                command.body["grants"]
                if cmd_id == command.id
                else self._part_grants(cmd_id, part_sealed)
            )
            for grant in grants:
                if grant["grant_id"] in seen:
                    raise SyncPartRejected(
                        "invalid_body",
                        f"grant.sync {sync_id}: grant {grant['grant_id']} is in two parts"
                        f" (again in part {n})",
                    )
                seen.add(grant["grant_id"])
            union.append((cmd_id, part_sealed, grants))
        conn.execute("DELETE FROM grants")
        for cmd_id, part_sealed, grants in union:
            if not grants:
                continue
            conn.execute(
                "INSERT INTO grants_signed (cmd_id, cmd_type, jws_sealed, received_at)"
                " VALUES (?, 'grant.sync', ?, datetime('now'))",
                (cmd_id, part_sealed),
            )
            for grant in grants:
                self._put(conn, cmd_id, grant, now)
        conn.execute("UPDATE grant_syncs SET state = 'applied' WHERE sync_id = ?", (sync_id,))
        conn.execute("DELETE FROM grant_sync_parts WHERE sync_id = ?", (sync_id,))
        log.info(
            "grant.sync applied", extra={"sync_id": sync_id, "parts": parts, "grants": len(seen)}
        )

    def _part_grants(self, cmd_id: str, sealed: bytes) -> list[dict[str, Any]]:
        """The grants of a kept part, from its signed text (verified again)."""
        try:
            jws_text = self._box.open(sealed, f"grant-jws:{cmd_id}").decode("ascii")
            envelope, _kid = verify_jws(jws_text, self._keys.verify)
        except (SecretBoxError, SealError, UnicodeDecodeError):
            raise SyncPartRejected(
                "sync_part_unreadable", f"a kept part ({cmd_id}) no longer verifies"
            ) from None
        return list(envelope.get("body", {}).get("grants", []))

    def _store_signed(self, conn: sqlite3.Connection, command: Command) -> None:
        sealed = self._box.seal(command.jws_compact.encode("ascii"), f"grant-jws:{command.id}")
        conn.execute(
            "INSERT INTO grants_signed (cmd_id, cmd_type, jws_sealed, received_at)"
            " VALUES (?, ?, ?, datetime('now'))",
            (command.id, command.type, sealed),
        )

    def _put(
        self, conn: sqlite3.Connection, cmd_id: str, grant: dict[str, Any], now: float
    ) -> None:
        grant_id = grant["grant_id"]
        previous = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT guest_id, id_hash, checked_in_at FROM grant_guests WHERE grant_id = ?",
                (grant_id,),
            )
        }
        conn.execute("DELETE FROM grants WHERE grant_id = ?", (grant_id,))
        pin = grant.get("pin")
        conn.execute(
            "INSERT INTO grants (grant_id, cmd_id, valid_from, valid_until, locks, pin_hash,"
            " received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                grant_id,
                cmd_id,
                parse_time(grant["valid_from"], "valid_from").timestamp(),
                parse_time(grant["valid_until"], "valid_until").timestamp(),
                json.dumps(list(grant["locks"])),
                self._box.keyed_hash(pin, _PIN_CONTEXT) if pin else None,
                now,
            ),
        )
        for guest in grant["guests"]:
            id_hash = self.id_hash(guest["id_number"])
            old = previous.get(guest["guest_id"])
            # A replaced grant keeps a guest's check-in when the card is unchanged; the
            # template is computed again, since the photo may have changed.
            conn.execute(
                "INSERT INTO grant_guests (grant_id, guest_id, id_hash, template,"
                " template_status, checked_in_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    grant_id,
                    guest["guest_id"],
                    id_hash,
                    None,
                    "pending" if guest.get("face_jpeg_b64") else "no_photo",
                    old[1] if old is not None and old[0] == id_hash else None,
                ),
            )

    # -- lookups (verified at every use) ---------------------------------------------

    def id_hash(self, id_number: str) -> str:
        """The keyed hash under which a guest's ID number is indexed."""
        return self._box.keyed_hash(id_number.upper(), _ID_CONTEXT)

    def guests_for_card(self, id_number: str) -> list[VerifiedGuest]:
        """Every guest entry whose signed ID number equals ``id_number`` (any lock, any time)."""
        with self._store.read() as conn:
            rows = conn.execute(
                "SELECT g.grant_id, g.cmd_id, gg.guest_id, gg.template_status, gg.checked_in_at"
                " FROM grant_guests gg JOIN grants g ON g.grant_id = gg.grant_id"
                " WHERE gg.id_hash = ?",
                (self.id_hash(id_number),),
            ).fetchall()
        found = []
        for grant_id, cmd_id, guest_id, status, checked_in in rows:
            guest = self._verified_guest(cmd_id, grant_id, guest_id, status, checked_in)
            if guest is not None and hmac.compare_digest(guest.id_number, id_number.upper()):
                found.append(guest)
        return found

    def guests_for_pin(self, pin: str) -> list[VerifiedGuest]:
        """Guests of every grant whose signed PIN equals ``pin``."""
        with self._store.read() as conn:
            rows = conn.execute(
                "SELECT g.grant_id, g.cmd_id, gg.guest_id, gg.template_status, gg.checked_in_at"
                " FROM grants g JOIN grant_guests gg ON g.grant_id = gg.grant_id"
                " WHERE g.pin_hash = ?",
                (self._box.keyed_hash(pin, _PIN_CONTEXT),),
            ).fetchall()
        found = []
        for grant_id, cmd_id, guest_id, status, checked_in in rows:
            guest = self._verified_guest(cmd_id, grant_id, guest_id, status, checked_in)
            if guest is not None and guest.pin is not None and hmac.compare_digest(guest.pin, pin):
                found.append(guest)
        return found

    def guest_photo(self, grant_id: str, guest_id: str) -> bytes | None:
        """The guest's JPEG from the verified signed grant, in memory only."""
        with self._store.read() as conn:
            row = conn.execute(
                "SELECT cmd_id FROM grants WHERE grant_id = ?", (grant_id,)
            ).fetchone()
        if row is None:
            return None
        body = self._verified_grant_body(row[0], grant_id)
        for guest in body["guests"]:
            if guest["guest_id"] == guest_id and guest.get("face_jpeg_b64"):
                try:
                    return base64.b64decode(guest["face_jpeg_b64"], validate=True)
                except (binascii.Error, ValueError):
                    return None
        return None

    def template(self, grant_id: str, guest_id: str) -> bytes | None:
        """The guest's face template, or None when not (yet) computed."""
        with self._store.read() as conn:
            row = conn.execute(
                "SELECT template FROM grant_guests WHERE grant_id = ? AND guest_id = ?",
                (grant_id, guest_id),
            ).fetchone()
        if row is None or row[0] is None:
            return None
        try:
            return self._box.open(row[0], f"face-template:{grant_id}:{guest_id}")
        except SecretBoxError:
            log.error("face template does not open", extra={"grant_id": grant_id})
            return None

    def store_template(
        self,
        grant_id: str,
        guest_id: str,
        template: bytes | None,
        status: str,
        model: str | None = None,
    ) -> None:
        """Keep a computed template (sealed) and the model that made it, or why none was made.

        With no template, a template of an earlier model is kept (its guest is
        not left without one) unless the photo itself is unusable or gone."""
        sealed = (
            None
            if template is None
            else self._box.seal(template, f"face-template:{grant_id}:{guest_id}")
        )
        with self._store.write() as conn:
            if template is None and status == "pending":
                conn.execute(
                    "UPDATE grant_guests SET template_status = ?"
                    " WHERE grant_id = ? AND guest_id = ?",
                    (status, grant_id, guest_id),
                )
                return
            conn.execute(
                "UPDATE grant_guests SET template = ?, template_status = ?, template_model = ?"
                " WHERE grant_id = ? AND guest_id = ?",
                (sealed, status, model if template is not None else None, grant_id, guest_id),
            )

    def requeue_other_models(self, model: str) -> int:
        """Mark for re-encoding every template not made by ``model``; how many.

        Their templates stay until the new ones are made (a door visit in
        between re-encodes on the spot: the worker refuses a template of
        another model, never compares it)."""
        with self._store.write() as conn:
            count = conn.execute(
                "UPDATE grant_guests SET template_status = 'pending'"
                " WHERE template IS NOT NULL AND coalesce(template_model, 'dlib') != ?"
                " AND template_status != 'pending'",
                (model,),
            ).rowcount
        if count:
            log.info("face templates of another model queued", extra={"count": count})
        return int(count)

    def pending_templates(self) -> list[tuple[str, str]]:
        """(grant_id, guest_id) of guests whose photo still needs encoding."""
        with self._store.read() as conn:
            return [
                (str(a), str(b))
                for a, b in conn.execute(
                    "SELECT grant_id, guest_id FROM grant_guests WHERE template_status = 'pending'"
                )
            ]

    def mark_checked_in(
        self, conn: sqlite3.Connection, grant_id: str, guest_id: str, at: float
    ) -> None:
        """Note the guest's first verified entry (in the transaction of its record)."""
        conn.execute(
            "UPDATE grant_guests SET checked_in_at = ? WHERE grant_id = ? AND guest_id = ?"
            " AND checked_in_at IS NULL",
            (at, grant_id, guest_id),
        )

    def purge_ended(self, now: float) -> int:
        """Delete grants whose end has passed, with their templates; how many went."""
        with self._store.write() as conn:
            count = conn.execute("DELETE FROM grants WHERE valid_until <= ?", (now,)).rowcount
            _delete_unreferenced(conn)
        if count:
            log.info("ended grants purged", extra={"count": count})
        return int(count)

    def counts(self, now: float) -> GrantCounts:
        """Totals for status displays."""
        with self._store.read() as conn:
            grants, active = conn.execute(
                "SELECT count(*), coalesce(sum(valid_from <= ? AND ? < valid_until), 0)"
                " FROM grants",
                (now, now),
            ).fetchone()
            guests, ready = conn.execute(
                "SELECT count(*), coalesce(sum(template IS NOT NULL), 0) FROM grant_guests"
            ).fetchone()
        return GrantCounts(int(grants), int(active), int(guests), int(ready))

    def list_masked(self, now: float) -> list[dict[str, Any]]:
        """Every stored grant, verified, for ``lockgw grants list``: personal data masked."""
        with self._store.read() as conn:
            grants = conn.execute(
                "SELECT grant_id, cmd_id FROM grants ORDER BY valid_from, grant_id"
            ).fetchall()
            guest_rows = conn.execute(
                "SELECT grant_id, guest_id, template_status, checked_in_at FROM grant_guests"
            ).fetchall()
        by_grant: dict[str, dict[str, tuple[str, float | None]]] = {}
        for grant_id, guest_id, status, checked_in in guest_rows:
            by_grant.setdefault(grant_id, {})[guest_id] = (status, checked_in)
        listing: list[dict[str, Any]] = []
        for grant_id, cmd_id in grants:
            try:
                body = self._verified_grant_body(cmd_id, grant_id)
            except GrantIntegrityError:
                listing.append({"grant_id": grant_id, "verified": False})
                continue
            start = parse_time(body["valid_from"], "valid_from").timestamp()
            end = parse_time(body["valid_until"], "valid_until").timestamp()
            rows = by_grant.get(grant_id, {})
            listing.append(
                {
                    "grant_id": grant_id,
                    "verified": True,
                    "room": body.get("room", ""),
                    "locks": list(body["locks"]),
                    "valid_from": body["valid_from"],
                    "valid_until": body["valid_until"],
                    "state": "active"
                    if start <= now < end
                    else "upcoming"
                    if now < start
                    else "ended",
                    "pin": bool(body.get("pin")),
                    "guests": [
                        {
                            "guest_id": g["guest_id"],
                            "name": mask_name(str(g["name"])),
                            "id_number": mask_id_number(str(g["id_number"])),
                            "face": rows.get(g["guest_id"], ("unknown", None))[0],
                            "checked_in": rows.get(g["guest_id"], ("", None))[1] is not None,
                        }
                        for g in body["guests"]
                    ],
                }
            )
        return listing

    # -- internals -----------------------------------------------------------------------

    def _verified_grant_body(self, cmd_id: str, grant_id: str) -> dict[str, Any]:
        with self._store.read() as conn:
            row = conn.execute(
                "SELECT jws_sealed FROM grants_signed WHERE cmd_id = ?", (cmd_id,)
            ).fetchone()
        if row is None:
            raise GrantIntegrityError(f"grant {grant_id}: its signed command is missing")
        try:
            jws_text = self._box.open(row[0], f"grant-jws:{cmd_id}").decode("ascii")
            envelope, _kid = verify_jws(jws_text, self._keys.verify)
        except (SecretBoxError, SealError, UnicodeDecodeError) as exc:
            raise GrantIntegrityError(f"grant {grant_id}: signed text does not verify") from exc
        if envelope.get("id") != cmd_id:
            raise GrantIntegrityError(f"grant {grant_id}: stored under another command's id")
        body = envelope.get("body", {})
        candidates = [body] if envelope.get("type") == "grant.put" else body.get("grants", [])
        for grant in candidates:
            if grant.get("grant_id") == grant_id:
                return dict(grant)
        raise GrantIntegrityError(f"grant {grant_id}: not in its signed command")

    def _verified_guest(
        self,
        cmd_id: str,
        grant_id: str,
        guest_id: str,
        template_status: str,
        checked_in_at: float | None,
    ) -> VerifiedGuest | None:
        try:
            grant = self._verified_grant_body(cmd_id, grant_id)
        except GrantIntegrityError as exc:
            log.error("stored grant failed verification; ignored", extra={"error": str(exc)})
            return None
        for guest in grant["guests"]:
            if guest["guest_id"] == guest_id:
                return VerifiedGuest(
                    grant_id=grant_id,
                    guest_id=guest_id,
                    room=str(grant.get("room", "")),
                    locks=tuple(grant["locks"]),
                    valid_from=parse_time(grant["valid_from"], "valid_from").timestamp(),
                    valid_until=parse_time(grant["valid_until"], "valid_until").timestamp(),
                    policy=GrantPolicy.from_body(grant.get("policy")),
                    has_photo=bool(guest.get("face_jpeg_b64")),
                    checked_in_at=checked_in_at,
                    template_status=template_status,
                    id_number=str(guest["id_number"]).upper(),
                    name=str(guest.get("name", "")),
                    pin=grant.get("pin"),
                )
        log.error("guest row without a signed guest; ignored", extra={"grant_id": grant_id})
        return None


def _delete_unreferenced(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM grants_signed WHERE cmd_id NOT IN (SELECT cmd_id FROM grants)")

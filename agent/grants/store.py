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

Rows that can grant something are authenticated (:mod:`agent.state.rowmac`):
the grant row, each guest row (with the checked-in mark) bound to its grant's
version. Every put takes a new version; a revoke, a replacement or a removal
by ``grant.sync`` leaves a tombstone with the dead version until the grant's
end, and ``grant.sync`` also raises a version floor below which every row is
dead. The tombstones and the floor are authenticated as a set by one MAC in
``meta``, checked again whenever another connection has written to the
database (``PRAGMA data_version``). A row that fails hides; a set that fails
hides every grant until the platform's next ``grant.sync``. Both raise the
``state_tampered`` incident.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.contract.keys import PlatformKeys
from agent.contract.limits import SYNC_PART_MAX_AGE_S
from agent.contract.messages import Command, parse_time
from agent.contract.seal import SealError, verify_jws
from agent.grants.model import GrantPolicy, VerifiedGuest
from agent.state.incidents import record_incident
from agent.state.rowmac import RowMac
from agent.state.secretbox import SecretBox, SecretBoxError
from agent.state.store import Store, utc_now_iso
from drivers.idcard.identity import mask_id_number, mask_name

log = logging.getLogger(__name__)

_ID_CONTEXT = "guest-id-number"
_PIN_CONTEXT = "grant-pin"
_VERSION_KEY = "grant_version"
_FLOOR_KEY = "grant_version_floor"
_TOMBSTONES_MAC_KEY = "tombstones_mac"
# The schema version that brought row MACs (agent/state/migrations.py).
_MAC_SCHEMA = 5
_GRANT_COLUMNS = "g.grant_id, g.cmd_id, g.version, g.valid_from, g.valid_until, g.locks, g.pin_hash"
_GUEST_COLUMNS = "gg.guest_id, gg.id_hash, gg.checked_in_at, gg.checkin_seq"
_LOOKUP = (
    f"SELECT {_GRANT_COLUMNS}, g.mac, {_GUEST_COLUMNS}, gg.mac, gg.template_status, t.version"
    " FROM grant_guests gg JOIN grants g ON g.grant_id = gg.grant_id"
    " LEFT JOIN grant_tombstones t ON t.grant_id = g.grant_id"
)


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
    templates_pending: int = 0  # grant photos not yet encoded


class GrantStore:
    """The offline grant store over the gateway's database."""

    def __init__(self, store: Store, box: SecretBox, platform_keys: PlatformKeys) -> None:
        self._store = store
        self._box = box
        self._keys = platform_keys
        self._macs = RowMac(box)
        self._lock = threading.Lock()
        self._set_checked_at: int | None = None  # data_version when the set last verified
        self._set_ok = False
        self._floor = 0
        self._reported: set[str] = set()
        if store.migrated_from < _MAC_SCHEMA:
            self._adopt()

    @property
    def row_macs(self) -> RowMac:
        """The row authenticator under the same local key (for other authenticated rows)."""
        return self._macs

    # -- applying platform commands (inside the command's transaction) ----------------

    def apply(self, conn: sqlite3.Connection, command: Command) -> None:
        """Carry out ``grant.put``, ``grant.revoke`` or ``grant.sync`` on ``conn``."""
        now = time.time()
        # A tampered set stays refused through puts and revokes; a whole grant.sync
        # (every part of one) rebuilds it.
        intact = self._set_intact(conn)
        rebuilt = False
        if command.type == "grant.put":
            self._store_signed(conn, command)
            self._put(conn, command.id, command.body, now)
        elif command.type == "grant.revoke":
            self._remove(conn, [command.body["grant_id"]])
        elif command.type == "grant.sync":
            if int(command.body.get("parts", 1)) == 1:
                self._replace_all(conn, {g["grant_id"] for g in command.body["grants"]})
                rebuilt = True
                if command.body["grants"]:
                    self._store_signed(conn, command)
                    for grant in command.body["grants"]:
                        self._put(conn, command.id, grant, now)
            else:
                rebuilt = self._sync_part(conn, command, now)
        else:
            raise ValueError(f"not a grant command: {command.type}")
        _delete_unreferenced(conn)
        if intact or rebuilt:
            self._seal_set(conn)

    def _replace_all(self, conn: sqlite3.Connection, keep: set[str]) -> None:
        """Before a full set is put: everything stored is dead from here on (a version
        floor), whatever the rows say; grants not in the new set leave tombstones."""
        floor = self._next_version(conn)
        gone = [r[0] for r in conn.execute("SELECT grant_id FROM grants")]
        self._remove(conn, [g for g in gone if g not in keep])
        conn.execute("DELETE FROM grants")
        _set_meta(conn, _FLOOR_KEY, str(floor))
        _set_meta(conn, _VERSION_KEY, str(floor))

    def _sync_part(self, conn: sqlite3.Connection, command: Command, now: float) -> bool:
        """Keep one part of a ``grant.sync`` in parts; with the last one, replace the set
        (True then).

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
            return False
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
        self._replace_all(conn, seen)
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
        return True

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
        # A replaced grant keeps a guest's check-in when the card is unchanged and the
        # old row is authentic; the old version is tombstoned.
        previous: dict[str, tuple[str, float | None, int | None]] = {}
        for row in conn.execute(f"{_LOOKUP} WHERE g.grant_id = ?", (grant_id,)).fetchall():
            if self._row_ok(row, conn):
                previous[row[8]] = (row[9], row[10], row[11])
        self._remove(conn, [grant_id])
        version = self._next_version(conn)
        pin = grant.get("pin")
        values: tuple[Any, ...] = (
            grant_id,
            cmd_id,
            version,
            parse_time(grant["valid_from"], "valid_from").timestamp(),
            parse_time(grant["valid_until"], "valid_until").timestamp(),
            json.dumps(list(grant["locks"])),
            self._box.keyed_hash(pin, _PIN_CONTEXT) if pin else None,
        )
        conn.execute(
            "INSERT INTO grants (grant_id, cmd_id, version, valid_from, valid_until, locks,"
            " pin_hash, mac, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, self._macs.mac("grant", *values), now),
        )
        for guest in grant["guests"]:
            id_hash = self.id_hash(guest["id_number"])
            old = previous.get(guest["guest_id"])
            checked_in, seq = (
                (old[1], old[2]) if old is not None and old[0] == id_hash else (None, None)
            )
            # The template is computed again, since the photo may have changed.
            conn.execute(
                "INSERT INTO grant_guests (grant_id, guest_id, id_hash, template,"
                " template_status, checked_in_at, checkin_seq, mac)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    grant_id,
                    guest["guest_id"],
                    id_hash,
                    None,
                    "pending" if guest.get("face_jpeg_b64") else "no_photo",
                    checked_in,
                    seq,
                    self._guest_mac(grant_id, version, guest["guest_id"], id_hash, checked_in, seq),
                ),
            )

    def _guest_mac(
        self,
        grant_id: str,
        version: int,
        guest_id: str,
        id_hash: str,
        checked_in_at: float | None,
        checkin_seq: int | None,
    ) -> str:
        return self._macs.mac(
            "guest", grant_id, version, guest_id, id_hash, checked_in_at, checkin_seq
        )

    def _remove(self, conn: sqlite3.Connection, grant_ids: Sequence[str]) -> None:
        """Delete grants, leaving a tombstone of each one's version until its end."""
        for grant_id in grant_ids:
            row = conn.execute(
                "SELECT version, valid_until FROM grants WHERE grant_id = ?", (grant_id,)
            ).fetchone()
            if row is None:
                continue
            version, until = int(row[0]), float(row[1])
            old = conn.execute(
                "SELECT version, until FROM grant_tombstones WHERE grant_id = ?", (grant_id,)
            ).fetchone()
            if old is not None:
                version, until = max(version, int(old[0])), max(until, float(old[1]))
            conn.execute(
                "INSERT OR REPLACE INTO grant_tombstones (grant_id, version, until, mac)"
                " VALUES (?, ?, ?, ?)",
                (grant_id, version, until, self._macs.mac("tombstone", grant_id, version, until)),
            )
            conn.execute("DELETE FROM grants WHERE grant_id = ?", (grant_id,))

    def _next_version(self, conn: sqlite3.Connection) -> int:
        """A version above every one in use or dead (a reset counter cannot reuse one)."""
        row = conn.execute(
            "SELECT max(coalesce((SELECT max(version) FROM grants), 0),"
            " coalesce((SELECT max(version) FROM grant_tombstones), 0),"
            " coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0),"
            " coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0))",
            (_VERSION_KEY, _FLOOR_KEY),
        ).fetchone()
        version = int(row[0]) + 1
        _set_meta(conn, _VERSION_KEY, str(version))
        return version

    # -- authenticity of the rows and of the set of tombstones ----------------------------

    def _set_digest(self, conn: sqlite3.Connection) -> tuple[str, int]:
        floor_row = conn.execute("SELECT value FROM meta WHERE key = ?", (_FLOOR_KEY,)).fetchone()
        floor = int(floor_row[0]) if floor_row is not None else 0
        stones = conn.execute(
            "SELECT grant_id, version, until FROM grant_tombstones ORDER BY grant_id"
        ).fetchall()
        return self._macs.mac("tombstones", floor, json.dumps(stones)), floor

    def _seal_set(self, conn: sqlite3.Connection) -> None:
        """Authenticate the tombstones and the floor as a set (in the caller's transaction)."""
        digest, floor = self._set_digest(conn)
        _set_meta(conn, _TOMBSTONES_MAC_KEY, digest)
        with self._lock:
            self._floor = floor
            self._set_ok = True
            self._set_checked_at = int(conn.execute("PRAGMA data_version").fetchone()[0])

    def _set_intact(self, conn: sqlite3.Connection) -> bool:
        """The tombstones and the floor are as this gateway wrote them."""
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        with self._lock:
            if self._set_checked_at == version:
                return self._set_ok
        digest, floor = self._set_digest(conn)
        row = conn.execute(
            "SELECT value FROM meta WHERE key = ?", (_TOMBSTONES_MAC_KEY,)
        ).fetchone()
        ok = row is not None and hmac.compare_digest(str(row[0]), digest)
        if ok:
            for grant_id, stone_version, until, mac in conn.execute(
                "SELECT grant_id, version, until, mac FROM grant_tombstones"
            ):
                if not self._macs.ok(mac, "tombstone", grant_id, stone_version, until):
                    ok = False
                    break
        with self._lock:
            self._set_checked_at, self._set_ok, self._floor = version, ok, floor
        if not ok:
            self._tampered(conn, "grant_tombstones", "the set of revoked grants was edited")
        return ok

    def _row_ok(self, row: Sequence[Any], conn: sqlite3.Connection) -> bool:
        """One row of ``_LOOKUP``: grant and guest MACs, version above the floor and any
        tombstone. False hides the row (reported once)."""
        grant_id, version = row[0], int(row[2])
        if not self._macs.ok(row[7], "grant", *row[0:7]):
            self._tampered(conn, f"grants:{grant_id}", f"grants row of {grant_id}")
            return False
        if not self._macs.ok(row[12], "guest", grant_id, version, row[8], row[9], row[10], row[11]):
            self._tampered(conn, f"guest:{grant_id}:{row[8]}", f"grant_guests row of {grant_id}")
            return False
        with self._lock:
            floor = self._floor
        if version < floor or (row[14] is not None and version <= int(row[14])):
            self._tampered(conn, f"dead:{grant_id}:{version}", f"a dead version of {grant_id}")
            return False
        return True

    def _tampered(self, conn: sqlite3.Connection, key: str, what: str) -> None:
        """Report a row that failed (once per row per run): log and incident."""
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
        log.error("stored row fails its authentication; it opens nothing", extra={"row": what})
        # Written on the caller's connection: it may already be inside a transaction.
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN IMMEDIATE")
        try:
            record_incident(conn, "state_tampered", what, utc_now_iso())
        except BaseException:
            if own:
                conn.execute("ROLLBACK")
            raise
        if own:
            conn.execute("COMMIT")
            # Our own commit does not change data_version; the set check stays cached.

    def _adopt(self) -> None:
        """MACs for rows stored before the schema had them (once, right after migrating)."""
        with self._store.write() as conn:
            rows = conn.execute(
                "SELECT grant_id, cmd_id, valid_from, valid_until, locks, pin_hash FROM grants"
                " WHERE mac IS NULL"
            ).fetchall()
            for grant_id, cmd_id, start, end, locks, pin_hash in rows:
                version = self._next_version(conn)
                values = (grant_id, cmd_id, version, start, end, locks, pin_hash)
                conn.execute(
                    "UPDATE grants SET version = ?, mac = ? WHERE grant_id = ?",
                    (version, self._macs.mac("grant", *values), grant_id),
                )
                for guest_id, id_hash, checked_in in conn.execute(
                    "SELECT guest_id, id_hash, checked_in_at FROM grant_guests WHERE grant_id = ?",
                    (grant_id,),
                ).fetchall():
                    conn.execute(
                        "UPDATE grant_guests SET mac = ? WHERE grant_id = ? AND guest_id = ?",
                        (
                            self._guest_mac(grant_id, version, guest_id, id_hash, checked_in, None),
                            grant_id,
                            guest_id,
                        ),
                    )
            self._seal_set(conn)

    # -- lookups (verified at every use) ---------------------------------------------

    def id_hash(self, id_number: str) -> str:
        """The keyed hash under which a guest's ID number is indexed."""
        return self._box.keyed_hash(id_number.upper(), _ID_CONTEXT)

    def guests_for_card(self, id_number: str) -> list[VerifiedGuest]:
        """Every guest entry whose signed ID number equals ``id_number`` (any lock, any time)."""
        found = []
        for row in self._authentic(f"{_LOOKUP} WHERE gg.id_hash = ?", self.id_hash(id_number)):
            guest = self._verified_guest(row[1], row[0], row[8], row[13], row[10])
            if guest is not None and hmac.compare_digest(guest.id_number, id_number.upper()):
                found.append(guest)
        return found

    def _authentic(self, query: str, key: str) -> list[Sequence[Any]]:
        """Rows of ``_LOOKUP`` that pass every check; none while the set is not intact."""
        with self._store.read() as conn:
            rows = conn.execute(query, (key,)).fetchall()
            if not rows:
                return []
            if not self._set_intact(conn):
                return []
            return [row for row in rows if self._row_ok(row, conn)]

    def guests_for_pin(self, pin: str) -> list[VerifiedGuest]:
        """Guests of every grant whose signed PIN equals ``pin``."""
        found = []
        rows = self._authentic(
            f"{_LOOKUP} WHERE g.pin_hash = ?", self._box.keyed_hash(pin, _PIN_CONTEXT)
        )
        for row in rows:
            guest = self._verified_guest(row[1], row[0], row[8], row[13], row[10])
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
        self,
        conn: sqlite3.Connection,
        grant_id: str,
        guest_id: str,
        at: float,
        seq: int | None = None,
    ) -> None:
        """Note the guest's first verified entry, in the transaction of its
        ``checkin.verified`` record (``seq``), under the guest row's MAC. A row that
        fails its MAC is not blessed with a new one."""
        row = conn.execute(
            f"{_LOOKUP} WHERE g.grant_id = ? AND gg.guest_id = ?", (grant_id, guest_id)
        ).fetchone()
        if row is None or row[10] is not None or not self._row_ok(row, conn):
            return
        version, id_hash = int(row[2]), row[9]
        conn.execute(
            "UPDATE grant_guests SET checked_in_at = ?, checkin_seq = ?, mac = ?"
            " WHERE grant_id = ? AND guest_id = ?",
            (
                at,
                seq,
                self._guest_mac(grant_id, version, guest_id, id_hash, at, seq),
                grant_id,
                guest_id,
            ),
        )

    def purge_ended(self, now: float) -> int:
        """Delete grants whose end has passed, with their templates; how many went."""
        with self._store.write() as conn:
            count = conn.execute("DELETE FROM grants WHERE valid_until <= ?", (now,)).rowcount
            _delete_unreferenced(conn)
            # Tombstones past their grant's end go only from a set that verifies, which
            # is then sealed again; a tampered set stays refused until a grant.sync.
            if self._set_intact(conn):
                conn.execute("DELETE FROM grant_tombstones WHERE until <= ?", (now,))
                self._seal_set(conn)
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
            guests, ready, pending = conn.execute(
                "SELECT count(*), coalesce(sum(template IS NOT NULL), 0),"
                " coalesce(sum(template_status = 'pending'), 0) FROM grant_guests"
            ).fetchone()
        return GrantCounts(int(grants), int(active), int(guests), int(ready), int(pending))

    def list_masked(self, now: float) -> list[dict[str, Any]]:
        """Every stored grant, verified, for ``lockgw grants list``: personal data masked."""
        with self._store.read() as conn:
            grants = conn.execute(
                "SELECT grant_id, cmd_id FROM grants ORDER BY valid_from, grant_id"
            ).fetchall()
            guest_rows = conn.execute(
                "SELECT grant_id, guest_id, template_status, checked_in_at FROM grant_guests"
            ).fetchall()
            # A grant with any row that fails its checks is listed as not verified.
            intact = self._set_intact(conn)
            failing = {
                row[0]
                for row in conn.execute(_LOOKUP).fetchall()
                if not (intact and self._row_ok(row, conn))
            }
        by_grant: dict[str, dict[str, tuple[str, float | None]]] = {}
        for grant_id, guest_id, status, checked_in in guest_rows:
            by_grant.setdefault(grant_id, {})[guest_id] = (status, checked_in)
        listing: list[dict[str, Any]] = []
        for grant_id, cmd_id in grants:
            if grant_id in failing:
                listing.append({"grant_id": grant_id, "verified": False})
                continue
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


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def _delete_unreferenced(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM grants_signed WHERE cmd_id NOT IN (SELECT cmd_id FROM grants)")

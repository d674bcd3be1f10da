"""Versioned schema migrations, applied in order at start.

The version lives in ``PRAGMA user_version``. Versions are contiguous from 1;
a migration is never edited once released, only followed by a new one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One schema step: SQL run in a single transaction, then ``user_version = version``."""

    version: int
    name: str
    sql: str


MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "base",
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        -- Facts about the gateway itself that must reach the platform as alerts
        -- (a database moved aside as corrupt, a clock jump, ...). Never personal data.
        CREATE TABLE incidents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL,
            at TEXT NOT NULL,
            reported INTEGER NOT NULL DEFAULT 0
        );
        """,
    ),
    Migration(
        2,
        "link",
        """
        -- The platform link (agent/outbox.py, agent/commands.py).
        -- One row of counters, changed in the same transaction as the outbox
        -- rows: last_seq is the seq counter (it never goes back, even when the
        -- outbox is emptied; seq must be known before sealing, since it is
        -- inside the signed body, so AUTOINCREMENT, which assigns it at INSERT,
        -- does not fit), bytes is the outbox size, acked_through the newest
        -- sync.ack, near_full whether the near-full alert is armed (0) or sent (1).
        CREATE TABLE outbox_meta (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            last_seq INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            acked_through INTEGER NOT NULL,
            near_full INTEGER NOT NULL
        );
        INSERT INTO outbox_meta (id, last_seq, bytes, acked_through, near_full)
            VALUES (1, 0, 0, 0, 0);
        -- Sealed gateway messages (JWE text only) until a sync.ack covers them.
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('evt', 'alert', 'ack')),
            type TEXT NOT NULL,
            priority INTEGER NOT NULL,
            sealed TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_at REAL NOT NULL,
            droppable INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX outbox_by_priority ON outbox (priority, seq);
        CREATE INDEX outbox_droppable ON outbox (seq) WHERE droppable = 1;
        -- Verified command ids, for replay detection; pruned after exp + margin.
        CREATE TABLE link_commands (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            exp REAL NOT NULL,
            received_at REAL NOT NULL,
            status TEXT NOT NULL,
            replay_acked INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX link_commands_by_exp ON link_commands (exp);
        -- Grants as the platform signed them: the inner JWS of the command,
        -- sealed at rest with the local SecretBox (it holds personal data).
        CREATE TABLE grants_signed (
            cmd_id TEXT PRIMARY KEY,
            cmd_type TEXT NOT NULL,
            jws_sealed BLOB NOT NULL,
            received_at TEXT NOT NULL
        );
        CREATE TABLE grants_raw (
            grant_id TEXT PRIMARY KEY,
            cmd_id TEXT NOT NULL REFERENCES grants_signed (cmd_id),
            received_at TEXT NOT NULL
        );
        CREATE INDEX grants_raw_by_cmd ON grants_raw (cmd_id);
        """,
    ),
    Migration(
        3,
        "grants",
        """
        -- Check-in grants (agent/grants.py). The signed command text stays in
        -- grants_signed (sealed at rest); these rows are an index only: every use
        -- re-verifies the signed text and decides on what it says, so an edited
        -- row here opens nothing. No names or ID numbers: guests are found by a
        -- keyed hash (HMAC with the gateway's local key) of their ID number.
        CREATE TABLE grants (
            grant_id TEXT PRIMARY KEY,
            cmd_id TEXT NOT NULL REFERENCES grants_signed (cmd_id),
            valid_from REAL NOT NULL,
            valid_until REAL NOT NULL,
            locks TEXT NOT NULL,
            pin_hash TEXT,
            received_at REAL NOT NULL
        );
        CREATE INDEX grants_by_cmd ON grants (cmd_id);
        CREATE INDEX grants_by_pin ON grants (pin_hash) WHERE pin_hash IS NOT NULL;
        CREATE TABLE grant_guests (
            grant_id TEXT NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
            guest_id TEXT NOT NULL,
            id_hash TEXT NOT NULL,
            template BLOB,
            template_status TEXT NOT NULL DEFAULT 'pending',
            checked_in_at REAL,
            PRIMARY KEY (grant_id, guest_id)
        );
        CREATE INDEX grant_guests_by_id_hash ON grant_guests (id_hash);
        """,
    ),
    Migration(
        4,
        "drop grants_raw",
        """
        -- The link's stand-in grant index, replaced by grants/grant_guests (3).
        -- grants_signed stays (GrantStore keeps the signed text there), but
        -- signed text only the stand-in referred to holds personal data no
        -- grant uses any more, so it goes too.
        DROP INDEX IF EXISTS grants_raw_by_cmd;
        DROP TABLE IF EXISTS grants_raw;
        DELETE FROM grants_signed WHERE cmd_id NOT IN (SELECT cmd_id FROM grants);
        """,
    ),
    Migration(
        5,
        "authenticated rows",
        """
        -- Every row that can grant something carries a keyed MAC (HMAC-SHA256 under
        -- the gateway's local key, agent/state/rowmac.py) bound to its grant, guest
        -- and version; a row whose MAC fails hides and raises state_tampered. Rows
        -- stored before this version get their MACs when the daemon first opens
        -- the migrated database (agent/grants/store.py, adopt).
        ALTER TABLE grants ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE grants ADD COLUMN mac TEXT;
        ALTER TABLE grant_guests ADD COLUMN checkin_seq INTEGER;
        ALTER TABLE grant_guests ADD COLUMN mac TEXT;
        -- A revoked, removed or replaced grant's highest dead version, kept until the
        -- grant's end: re-inserted rows of that version or older open nothing. The
        -- set as a whole is authenticated by a MAC in meta (tombstones_mac), so a
        -- deleted tombstone is noticed.
        CREATE TABLE grant_tombstones (
            grant_id TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            until REAL NOT NULL,
            mac TEXT NOT NULL
        );
        -- PIN lockouts per lock, kept across restarts (agent/state/lockouts.py).
        CREATE TABLE pin_lockouts (
            lock_id TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            locked_until REAL,
            mac TEXT NOT NULL
        );
        """,
    ),
    Migration(
        6,
        "grant sync parts, outbox gaps, unlock intents",
        """
        -- grant.sync in parts (contract section 5, revision 1.1): the parts of one
        -- sync_id wait here, their signed command text sealed like grants_signed,
        -- until every part has arrived; then the grant set is replaced in one
        -- transaction. grant_syncs remembers each sync_id's fate so that a late
        -- part of a finished, superseded or expired sync is refused.
        CREATE TABLE grant_syncs (
            sync_id TEXT PRIMARY KEY,
            parts INTEGER NOT NULL,
            first_at REAL NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('open', 'applied', 'superseded', 'expired'))
        );
        CREATE TABLE grant_sync_parts (
            sync_id TEXT NOT NULL REFERENCES grant_syncs (sync_id) ON DELETE CASCADE,
            part INTEGER NOT NULL,
            cmd_id TEXT NOT NULL,
            jws_sealed BLOB NOT NULL,
            PRIMARY KEY (sync_id, part)
        );
        -- seq ranges that will never be sent from this database (agent/outbox.py):
        -- numbers a lost or moved-aside database used. Declared to the platform in
        -- an outbox.dropped event (declared_at set) once salvage had its chance.
        CREATE TABLE outbox_gaps (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            first INTEGER NOT NULL,
            last INTEGER NOT NULL,
            reason TEXT NOT NULL,
            noticed_at REAL NOT NULL,
            declared_at REAL
        );
        -- Unlock intents (agent/door/recorder.py): one per committed door.opened, in
        -- its transaction, keyed by its seq; cleared when the lock confirms the
        -- unlock or door.unlock_failed is recorded. Any row found at start is an
        -- opening that was recorded but never carried out (the process died between
        -- record and unlock): reported as door.unlock_failed, reason gateway_restart.
        CREATE TABLE unlock_intents (
            seq INTEGER PRIMARY KEY,
            lock TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        """,
    ),
    Migration(
        7,
        "outbox requests",
        """
        -- Contract 1.1 section 6: gateway requests (eid.verify) on P/req, kind 'req',
        -- published before everything else. SQLite cannot change a CHECK in place:
        -- the table is rebuilt with its rows.
        CREATE TABLE outbox_new (
            seq INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('req', 'evt', 'alert', 'ack')),
            type TEXT NOT NULL,
            priority INTEGER NOT NULL,
            sealed TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_at REAL NOT NULL,
            droppable INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO outbox_new SELECT seq, kind, type, priority, sealed, size, created_at,
            droppable FROM outbox;
        DROP TABLE outbox;
        ALTER TABLE outbox_new RENAME TO outbox;
        CREATE INDEX outbox_by_priority ON outbox (priority, seq);
        CREATE INDEX outbox_droppable ON outbox (seq) WHERE droppable = 1;
        """,
    ),
    Migration(
        8,
        "face template model",
        """
        -- Which face model made each template (NULL: made before models were named, dlib).
        -- A change of [face] model re-encodes every template of another model.
        ALTER TABLE grant_guests ADD COLUMN template_model TEXT;
        """,
    ),
]

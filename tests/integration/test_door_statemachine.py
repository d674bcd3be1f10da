"""A Hypothesis state machine over grants, revocations, clock moves, restarts and presentations.

The gateway side is real (store, sealed commands through the command processor, the
grant store, the clock guard, the door flow, the outbox); the lock, the camera and the
face matcher are stand-ins, so thousands of steps run in seconds. The attacker's moves
are in it too: the wall clock set either way, the monotonic clock going back, power
cycles, platform commands stamped far ahead or long ago, database rows edited,
re-inserted or deleted from another connection. Invariants:

- a revoked, expired, not-yet-valid, tampered or never-granted credential never opens a
  door, and a valid one with the holder's face does (the model predicts every outcome);
- trusted time never goes back and stays within a bound of real time whatever the wall
  clock says; every record carries it;
- every unlock finds its ``door.opened`` record already committed;
- no ID number or name used appears in plaintext in the database files or the logs.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import io
import json
import logging
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from joserfc.jwk import OKPKey

from agent.contract.keys import (
    create_gateway_keys,
    load_gateway_keys,
    load_platform_keys,
    new_key,
    public_set,
)
from agent.contract.messages import make_envelope
from agent.contract.seal import seal
from agent.door.alerts import AlertPolicy, AlertRules
from agent.door.decision import SitePolicy
from agent.door.doors import DoorDevices, FlowSettings
from agent.door.flow import DoorFlow
from agent.face.detect import Reason
from agent.face.template import template_to_bytes
from agent.face.verify import FaceSettings, VerifyResult
from agent.grants.store import GrantStore
from agent.runtime.logs import JsonLineFormatter
from agent.state.clock import DEFAULT_DRIFT_S, DEFAULT_MAX_SKEW_S, SLEW_PPM, ClockGuard
from agent.state.secretbox import SecretBox
from agent.state.store import Store
from agent.sync.applier import GatewayApplier
from agent.sync.commands import CommandProcessor
from agent.sync.journal import Journal
from agent.sync.outbox import Outbox
from drivers.idcard.codec import CardData
from drivers.idcard.reader import card_read_from
from firmware_sim.idcards import make_id_number, sample_card

GW = "sm-gw-01"
LOCKS = ("L1", "L2")
START = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.UTC).timestamp()
PEOPLE = [
    ("周一鸣", make_id_number(date(1985, 1, 2), "320102", 11, 1)),
    ("吴二娘", make_id_number(date(1990, 5, 6), "320102", 22, 2)),
    ("郑三水", make_id_number(date(1978, 9, 10), "320102", 33, 1)),
]


class FakeClocks:
    """The machine's wall clock (anyone with root sets it) and its monotonic clock."""

    def __init__(self) -> None:
        self.wall_now = START
        self.boot_now = 50.0
        self.boots = 1

    def wall(self) -> float:
        return self.wall_now

    def boot(self) -> float:
        return self.boot_now

    def boot_id(self) -> str:
        return f"boot-{self.boots}"


GRACE_S = 10 * 86400 + 900  # off the half-hour grid of the steps: no ties with trusted time
# How far trusted time may lead real time: the drift, and the slew over the longest run.
LEAD_S = DEFAULT_DRIFT_S + SLEW_PPM * 1e-6 * 60 * 86400


@dataclass
class FakeFace:
    """Matches when the person at the door is the one whose photo made the template."""

    person: int = 0
    timeout_s: float = 1.0
    settings: FaceSettings = field(default_factory=FaceSettings)
    model: str = "mobilefacenet"

    def encode_reference(self, image: bytes, timeout: float | None = None) -> bytes:
        # A template in the real format, named after the configured model.
        values = np.frombuffer(hashlib.sha512(image).digest() * 2, dtype=np.uint8)
        return template_to_bytes(values.astype(np.float64), self.model)

    def verify(self, frame: np.ndarray, reference: bytes, timeout: float | None = None) -> Any:
        match = reference == self.encode_reference(b"face-of-%d" % self.person)
        reason = Reason.MATCH if match else Reason.NO_MATCH
        # The person at this fake door is always live (PAD's live probability).
        return VerifyResult(match, reason, 0.5, 0.3 if match else 0.8, b"crop", 1.0, 0.9)

    def encodings(self, frame: np.ndarray, timeout: float | None = None) -> list[np.ndarray]:
        return []

    def liveness(self, frames: list[np.ndarray], timeout: float | None = None) -> Any:
        raise AssertionError("liveness is off")


class FakeCamera:
    def read(self) -> np.ndarray:
        return np.zeros((4, 4, 3), np.uint8)

    def close(self) -> None:
        pass


class RecordCheckingBus:
    """A lock bus that checks, at every unlock, that the opening's record is committed."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.unlocks = 0

    def committed_openings(self) -> int:
        conn = sqlite3.connect(self.db_path)
        try:
            return int(
                conn.execute("SELECT count(*) FROM outbox WHERE type = 'door.opened'").fetchone()[0]
            )
        finally:
            conn.close()

    def unlock(self, address: int, seconds: float) -> None:
        # A separate connection sees only committed rows.
        assert self.committed_openings() > self.unlocks, "unlock before its record was committed"
        self.unlocks += 1

    def feedback(self, address: int, granted: bool) -> None:
        pass


@dataclass
class ModelGrant:
    guests: tuple[int, ...]
    locks: tuple[str, ...]
    valid_from: float
    valid_until: float
    body: dict[str, Any]
    revoked: bool = False
    tampered: bool = False
    saved_rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)


class DoorMachine(RuleBasedStateMachine):
    """See the module text."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="lockgw-sm-"))
        self.clocks = FakeClocks()
        self.real = START  # the true time; the platform's ts always says it
        self.last_contact = START
        self.lockdown = False  # the tombstone set was edited: nothing opens until a grant.sync
        self.trusted_seen = 0.0
        self.journal = Journal()
        self.face = FakeFace()
        self.grants: dict[str, ModelGrant] = {}
        self.log = io.StringIO()
        handler = logging.StreamHandler(self.log)
        handler.setFormatter(JsonLineFormatter())
        self.handler = handler
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.DEBUG)
        keys = self.dir / "keys"
        keys.mkdir()
        create_gateway_keys(keys / "gateway.jwks")
        self.platform_sig = new_key("Ed25519")
        platform_enc = new_key("X25519")
        platform = {
            "keys": [self.platform_sig.as_dict(private=True), platform_enc.as_dict(private=True)]
        }
        (keys / "platform.jwks").write_text(json.dumps(public_set(platform)), encoding="utf-8")
        self.bus: RecordCheckingBus | None = None
        self.store: Store | None = None
        self._boot()

    def _boot(self) -> None:
        """Start (or restart) the gateway's parts over the same files."""
        keys = self.dir / "keys"
        self.gw_keys = load_gateway_keys(keys / "gateway.jwks")
        enc = next(k for k in self.gw_keys.public_set["keys"] if k["crv"] == "X25519")
        self.gateway_enc = OKPKey.import_key(enc)
        pf_keys = load_platform_keys(keys / "platform.jwks")
        self.store = Store.open(self.dir / "lockgw.db")
        box = SecretBox.load_or_create(self.dir / "local.key")
        outbox = Outbox(self.store, GW, self.gw_keys, pf_keys)
        outbox.add_record_observer(self.journal.add)
        self.grant_store = GrantStore(self.store, box, pf_keys)
        self.guard = ClockGuard(self.store, sources=self.clocks)
        previous = self.bus.unlocks if self.bus is not None else 0
        self.bus = RecordCheckingBus(self.dir / "lockgw.db")
        self.bus.unlocks = previous
        self.flow = DoorFlow(
            store=self.store,
            outbox=outbox,
            grants=self.grant_store,
            clock=self.guard,
            rules=AlertRules(AlertPolicy()),
            face=self.face,  # type: ignore[arg-type]
            doors=[
                DoorDevices(lock, "", "bus0", i + 1, 0.01, self.bus, FakeCamera())
                for i, lock in enumerate(LOCKS)
            ],
            settings=FlowSettings(SitePolicy(offline_grace_s=GRACE_S), face_attempts=1),
        )
        applier = GatewayApplier(self.grant_store, set(LOCKS), lambda *a: None)
        self.processor = CommandProcessor(
            self.store,
            outbox,
            GW,
            self.gw_keys,
            pf_keys,
            applier,
            now=lambda: dt.datetime.fromtimestamp(self.guard.now(), dt.UTC),
            on_verified=self.guard.observe_trusted,
        )

    def _send(
        self, msg_type: str, body: dict[str, Any], skew_s: float = 0.0, expect: str = "ok"
    ) -> None:
        """A platform command stamped ``skew_s`` away from real time."""
        now = dt.datetime.fromtimestamp(self.real + skew_s, dt.UTC)
        life = dt.timedelta(hours=1) + dt.timedelta(seconds=max(0.0, -skew_s))
        env = make_envelope(msg_type, GW, body, exp=now + life, now=now)
        sealed = seal(env, self.platform_sig, self.gateway_enc)
        outcome = self.processor.handle(sealed.encode())
        assert (
            (outcome.status, outcome.reason or "ok") == ("ok", "ok")
            if expect == "ok"
            else (
                outcome.status,
                outcome.reason,
            )
            == ("rejected", expect)
        ), outcome
        if outcome.status == "ok":
            self.last_contact = self.real

    def _attacker(self) -> sqlite3.Connection:
        """Another process's connection to the gateway's database file."""
        return sqlite3.connect(self.dir / "lockgw.db", isolation_level=None)

    # -- rules ---------------------------------------------------------------------------

    @initialize()
    def _first_contact(self) -> None:
        self._send("ping", {})

    @rule(
        guests=st.sets(st.sampled_from(range(len(PEOPLE))), min_size=1, max_size=2),
        locks=st.sets(st.sampled_from(LOCKS), min_size=1),
        starts_in_h=st.sampled_from([-48, -2, 0, 3]),
        lasts_h=st.sampled_from([1, 5, 48]),
        slot=st.integers(0, 3),
    )
    def put_grant(
        self, guests: set[int], locks: set[str], starts_in_h: int, lasts_h: int, slot: int
    ) -> None:
        grant_id = f"G{slot}"
        start = self.real + starts_in_h * 3600
        body = {
            "grant_id": grant_id,
            "room": "101",
            "locks": sorted(locks),
            "valid_from": _iso(start),
            "valid_until": _iso(start + lasts_h * 3600),
            "guests": [
                {
                    "guest_id": f"p{i}",
                    "id_number": PEOPLE[i][1],
                    "name": PEOPLE[i][0],
                    "face_jpeg_b64": base64.b64encode(b"face-of-%d" % i).decode(),
                }
                for i in sorted(guests)
            ],
        }
        self._send("grant.put", body)
        db = self._attacker()
        saved = {
            table: db.execute(f"SELECT * FROM {table} WHERE {where}", (grant_id,)).fetchall()
            for table, where in (
                ("grants", "grant_id = ?"),
                ("grant_guests", "grant_id = ?"),
                ("grants_signed", "cmd_id = (SELECT cmd_id FROM grants WHERE grant_id = ?)"),
            )
        }
        db.close()
        self.grants[grant_id] = ModelGrant(
            tuple(sorted(guests)),
            tuple(sorted(locks)),
            _whole(start),
            _whole(start + lasts_h * 3600),
            body,
            saved_rows=saved,
        )

    @rule(slot=st.integers(0, 3), reinsert=st.booleans())
    def revoke(self, slot: int, reinsert: bool) -> None:
        grant_id = f"G{slot}"
        self._send("grant.revoke", {"grant_id": grant_id, "reason": "checkout"})
        if grant_id in self.grants:
            self.grants[grant_id].revoked = True
            if reinsert:  # the attacker puts the saved rows straight back
                self.reinsert_revoked_rows(slot)

    @rule(hours=st.sampled_from([0.5, 2, 12, 30]))
    def time_passes(self, hours: float) -> None:
        self.real += hours * 3600
        self.clocks.wall_now += hours * 3600
        self.clocks.boot_now += hours * 3600

    @rule(hours=st.sampled_from([-48, -6, -1, 1, 6, 48]))
    def wall_clock_set(self, hours: float) -> None:
        self.clocks.wall_now += hours * 3600

    @rule(seconds=st.sampled_from([1.0, 3600.0]))
    def monotonic_clock_back(self, seconds: float) -> None:
        self.clocks.boot_now = max(0.0, self.clocks.boot_now - seconds)

    @rule(
        skew_s=st.sampled_from([30 * 86400 + 1234, 86400 + 1234, 120.0, -3 * 86400]),
    )
    def platform_ts_skewed(self, skew_s: float) -> None:
        # Off the hour grid: a wall clock set by whole hours never agrees with these.
        self._send("ping", {}, skew_s, "ok" if skew_s <= DEFAULT_MAX_SKEW_S else "clock_skew")

    @rule()
    def restart(self) -> None:
        assert self.store is not None
        self.guard.flush()
        self.store.close()
        self._boot()

    @rule(off_hours=st.sampled_from([0.5, 5, 30]))
    def power_cycle(self, off_hours: float) -> None:
        """No monotonic continuity; the RTC kept true time (see docs/door.md for a wrong one)."""
        assert self.store is not None
        self.store.close()  # no flush: the power just went
        self.real += off_hours * 3600
        self.clocks.wall_now = self.real
        self.clocks.boot_now = 3.0
        self.clocks.boots += 1
        self._boot()

    @rule(slot=st.integers(0, 3))
    def edit_checked_in_mark(self, slot: int) -> None:
        grant = self.grants.get(f"G{slot}")
        db = self._attacker()
        edited = db.execute(
            "UPDATE grant_guests SET checked_in_at = 1 WHERE grant_id = ?", (f"G{slot}",)
        ).rowcount
        db.close()
        if edited and grant is not None:
            grant.tampered = True

    @rule(slot=st.integers(0, 3))
    def reinsert_revoked_rows(self, slot: int) -> None:
        grant = self.grants.get(f"G{slot}")
        if grant is None or not grant.revoked:
            return
        db = self._attacker()
        for table in ("grants_signed", "grants", "grant_guests"):
            for row in grant.saved_rows[table]:
                marks = ",".join("?" * len(row))
                db.execute(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", row)
        db.close()
        # the revoked grant's own guest at its own door: still refused
        self._present(grant.guests[0], grant.guests[0], grant.locks[0])

    @rule()
    def delete_tombstones(self) -> None:
        db = self._attacker()
        if db.execute("DELETE FROM grant_tombstones").rowcount:
            self.lockdown = True
        db.close()

    @rule()
    def platform_resyncs(self) -> None:
        live = {k: g for k, g in self.grants.items() if not g.revoked}
        self._send("grant.sync", {"grants": [g.body for g in live.values()]})
        for grant in live.values():
            grant.tampered = False
        self.lockdown = False

    @rule(
        holder=st.sampled_from(range(len(PEOPLE))),
        person=st.sampled_from(range(len(PEOPLE))),
        lock=st.sampled_from(LOCKS),
    )
    def present_card(self, holder: int, person: int, lock: str) -> None:
        self._present(holder, person, lock)

    def _present(self, holder: int, person: int, lock: str) -> None:
        self.face.person = person
        name, number = PEOPLE[holder]
        card = sample_card(
            name=name, id_number=number, birth=number[6:14], sex="1" if int(number[16]) % 2 else "2"
        )
        read = card_read_from(CardData(card.text_block(), card.photo), None, 1.0)
        before = self.bus.unlocks if self.bus else 0
        seen = len(self.journal.since(0, 10_000))
        outcome = asyncio.run(self.flow.present_card(lock, read))
        now = self.real
        expected = (
            person == holder
            and not self.lockdown
            and now - self.last_contact <= GRACE_S
            and any(
                not g.revoked
                and not g.tampered
                and holder in g.guests
                and lock in g.locks
                and g.valid_from <= now < g.valid_until
                for g in self.grants.values()
            )
        )
        assert outcome.granted == expected, (outcome.reason, expected)
        assert self.bus is not None
        assert self.bus.unlocks == before + (1 if expected else 0)
        for record in self.journal.since(0, 10_000)[seen:]:
            if "at" in record:
                at = dt.datetime.fromisoformat(record["at"].replace("Z", "+00:00")).timestamp()
                assert self.real - 1 <= at <= self.real + LEAD_S, (record, self.real)

    @invariant()
    def trusted_time_is_monotonic_and_near_real_time(self) -> None:
        now = self.guard.now()
        assert now >= self.trusted_seen
        self.trusted_seen = now
        assert self.real - 1e-3 <= now <= self.real + LEAD_S, now - self.real

    def teardown(self) -> None:
        try:
            assert self.store is not None
            self.store.close()
            logs = self.log.getvalue().encode()
            files = [p for p in self.dir.iterdir() if p.name.startswith("lockgw.db")]
            for name, number in PEOPLE:
                for blob in [logs, *(p.read_bytes() for p in files)]:
                    for form in (name.encode(), number.encode(), name.encode("utf-16-le")):
                        assert form not in blob, "personal data in plaintext"
        finally:
            logging.getLogger().removeHandler(self.handler)
            shutil.rmtree(self.dir, ignore_errors=True)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _whole(ts: float) -> float:
    return float(int(ts))


DoorMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDoorMachine = DoorMachine.TestCase

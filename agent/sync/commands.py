"""Platform commands: open → check → apply exactly once → answer with a sealed ``ack``.

Checks, in order: size, decryption, signature by a pinned platform key
(:mod:`agent.contract.seal`), envelope and body schema (:mod:`agent.contract.messages`), ``gw``
is ours, ``exp`` not passed, ``id`` not seen before. The command id is
recorded, the applier's database changes are made and the ``ack`` is enqueued
in ONE transaction, so a crash either applies and answers a command or does
neither; a redelivery after the crash is then caught as a replay.

Answering (contract section 3, revision 1.1): a command whose signature
verified is answered (``ok``, or ``rejected`` with an ``error`` that starts
with a reason code: ``invalid_body``, ``wrong_gw``, ``expired``,
``replayed``, ``too_large``, and the appliers' codes such as
``photo_too_large`` or ``unknown_lock``) when its ``id`` is a UUID — we
answer authenticated messages only. A message that does not open or verify
(garbage, tampering, an unknown key) is never answered: its ``id`` could be
forged, and answering unauthenticated input would let anyone on the broker
fill our outbox. Those are counted and logged. A message over the payload
limit that still reached us (the broker forwards up to the announced packet
size) is opened with the packet limit so that its signature can be checked,
then answered ``too_large`` without being acted on. A replayed ``id`` is
answered once (``rejected``, ``replayed``); further copies are only counted.
``sync.ack`` is never answered and, being idempotent, is not recorded for
replay.

``eid.result`` (contract section 6) goes through every check of a command and
is recorded for replay, but is never answered with an ``ack``, not even when
dropped; a verified one is handed to ``on_eid_result``, which matches it to a
request still waiting (or ignores it) and says which, for the counters.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.contract.keys import GatewayKeys, PlatformKeys
from agent.contract.limits import PACKET_MARGIN_BYTES
from agent.contract.messages import (
    Command,
    CommandRejected,
    MessageError,
    format_time,
    parse_time,
    utc_now,
    validate_command,
)
from agent.contract.seal import SealError, open_sealed
from agent.state.store import Store
from agent.sync.outbox import Outbox

log = logging.getLogger(__name__)

REPLAY_MARGIN_S = 86_400.0
# Commands wait at the broker for at most the session expiry (7 days); one signed
# longer ago than this is refused, so a replay never outlives its recorded id.
REPLAY_WINDOW_S = 8 * 86_400.0


class CommandApplier(Protocol):
    """What the daemon supplies to carry out grant and lock commands."""

    def apply(self, conn: sqlite3.Connection, command: Command) -> Callable[[], None] | None:
        """Make the command's database changes on ``conn`` (inside the transaction that
        also records the id and the ack). Return an action to run after commit (e.g.
        hand an unlock to the door), or None. Raise CommandRejected to refuse."""
        ...


@dataclass(frozen=True)
class CommandOutcome:
    """What happened to one inbound payload (for tests and the health counters)."""

    status: str  # "ok", "rejected", "dropped" (not answered), "synced", "deferred"
    reason: str = ""
    cmd_id: str | None = None


class CommandProcessor:
    """Turns inbound ``cmd`` payloads into applied commands and acks; never raises on bad input."""

    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        gateway_id: str,
        gateway_keys: GatewayKeys,
        platform_keys: PlatformKeys,
        applier: CommandApplier,
        *,
        max_payload_bytes: int = 1_048_576,
        now: Callable[[], dt.datetime] = utc_now,
        on_verified: Callable[[float], bool | None] | None = None,
        on_eid_result: Callable[[Command], str] | None = None,
        defer: Callable[[Command], str | None] | None = None,
    ) -> None:
        """``on_verified(ts)`` gets the ``ts`` (epoch seconds) of every command whose
        signature and envelope check out, before exp/replay checks (a clock guard can
        use it as trusted time); returning False refuses the command as ``clock_skew``
        (``sync.ack`` is still applied: it carries no time). ``now`` is trusted time:
        exp and the replay window are checked against it and ids are pruned by it.
        ``defer(command)`` names a reason to leave a verified command unapplied and
        unanswered for now (a full disk): its id is not recorded, so the platform's
        next sending of it is applied."""
        self._store = store
        self._outbox = outbox
        self._gw = gateway_id
        self._gw_keys = gateway_keys
        self._pf_keys = platform_keys
        self._applier = applier
        self._max = max_payload_bytes
        self._now = now
        self._on_verified = on_verified
        self._on_eid_result = on_eid_result
        self._defer = defer
        self.counters: dict[str, int] = {"received": 0, "applied": 0, "synced": 0}
        self.drop_log = DropLog()
        self.last_sync_at: str | None = None

    def handle(self, payload: bytes) -> CommandOutcome:
        """Process one payload from ``P/cmd``."""
        self.counters["received"] += 1
        try:
            opened = open_sealed(
                payload,
                self._gw_keys.decryption,
                self._pf_keys.verify,
                max_bytes=self._max + PACKET_MARGIN_BYTES,
            )
        except SealError as exc:
            return self._drop(exc.reason, str(exc))
        env = opened.body
        cmd_id = env.get("id")
        if len(payload) > self._max:
            detail = f"sealed command is {len(payload)} bytes, limit {self._max}"
            if env.get("type") == "eid.result":  # never answered (contract section 6)
                return self._drop("eid_too_large", detail)
            if not _answerable(cmd_id):
                return self._drop("oversized", detail)
            assert isinstance(cmd_id, str)
            return self._reject_unrecorded(cmd_id, "too_large", detail, env)
        try:
            validate_command(env, self._gw)
        except MessageError as exc:
            if env.get("type") == "eid.result":
                reason = "wrong_gw" if exc.field == "gw" else "invalid"
                return self._drop(f"eid_{reason}", str(exc))
            if not _answerable(cmd_id):
                return self._drop("invalid", str(exc))
            assert isinstance(cmd_id, str)
            reason = "wrong_gw" if exc.field == "gw" else "invalid_body"
            return self._reject_unrecorded(cmd_id, reason, str(exc), env)
        assert isinstance(cmd_id, str)
        ts = parse_time(env["ts"]).timestamp()
        skewed = False
        if self._on_verified is not None:
            try:
                skewed = self._on_verified(ts) is False
            except Exception:
                log.exception("on_verified hook failed")
        exp = parse_time(env["exp"], "exp")
        command = Command(
            id=cmd_id,
            type=env["type"],
            exp=exp,
            body=env["body"],
            jws_compact=opened.jws_compact,
            signer_kid=opened.signer_kid,
        )
        now = self._now()
        if command.type == "sync.ack":
            return self._sync_ack(command, now)
        if command.type == "eid.result":
            return self._eid_result(command, now)
        deferred = self._defer(command) if self._defer is not None else None
        if deferred is not None:
            self._count(f"deferred_{deferred}")
            self.drop_log.note(deferred, f"command not applied for now ({deferred})")
            return CommandOutcome("deferred", deferred, command.id)
        refusal: tuple[str, str] | None = None
        if skewed:
            ahead = ts - now.timestamp()
            refusal = (
                "clock_skew",
                f"clock_skew: command ts is {ahead:.0f} s ahead of the gateway's trusted time",
            )
        elif now.timestamp() - ts > REPLAY_WINDOW_S:
            refusal = ("expired", "expired: command is older than the replay window")
        return self._execute(command, now, refusal)

    def prune(self) -> int:
        """Forget command ids whose exp passed more than a day ago by trusted time (a
        replay is then an exp fail, since trusted time never goes back)."""
        self.drop_log.flush()
        cutoff = self._now().timestamp() - REPLAY_MARGIN_S
        with self._store.write() as conn:
            return conn.execute("DELETE FROM link_commands WHERE exp < ?", (cutoff,)).rowcount

    # -- internals -------------------------------------------------------------

    def _sync_ack(self, command: Command, now: dt.datetime) -> CommandOutcome:
        if command.exp <= now:
            return self._drop("expired", "sync.ack past its exp")
        through = int(command.body["through_seq"])
        try:
            released = self._outbox.ack_through(through)
        except ValueError as exc:
            return self._drop("sync_ack_ahead", str(exc))
        self.counters["synced"] += 1
        self.last_sync_at = format_time(now)
        log.debug("sync.ack", extra={"through_seq": through, "released": released})
        return CommandOutcome("synced", cmd_id=command.id)

    def _eid_result(self, command: Command, now: dt.datetime) -> CommandOutcome:
        if command.exp <= now:
            return self._drop("eid_expired", "eid.result past its exp")
        with self._store.write() as conn:
            seen = conn.execute(
                "SELECT 1 FROM link_commands WHERE id = ?", (command.id,)
            ).fetchone()
            if seen is None:
                self._record(conn, command, now, "ok")
        if seen is not None:
            return self._drop("eid_replayed", "eid.result id already received")
        if self._on_eid_result is None:
            return self._drop("eid_unwired", "no electronic ID check-in at this gateway")
        try:
            matched = self._on_eid_result(command)
        except Exception:
            log.exception("eid.result handling failed", extra={"cmd_id": command.id})
            matched = "error"
        self._count(f"eid_{matched}")
        return CommandOutcome(
            "ok" if matched == "matched" else "dropped", f"eid_{matched}", command.id
        )

    def _execute(
        self, command: Command, now: dt.datetime, refusal: tuple[str, str] | None = None
    ) -> CommandOutcome:
        post: Callable[[], None] | None = None
        with self._store.write() as conn:
            row = conn.execute(
                "SELECT replay_acked FROM link_commands WHERE id = ?", (command.id,)
            ).fetchone()
            if row is not None:
                if row[0]:
                    self._count("rejected_replayed")
                    self.drop_log.note("replayed_again", f"command {command.id} replayed again")
                    return CommandOutcome("dropped", "replayed", command.id)
                conn.execute(
                    "UPDATE link_commands SET replay_acked = 1 WHERE id = ?", (command.id,)
                )
                self._ack(conn, command.id, "replayed: command id already executed")
                status, reason = "rejected", "replayed"
            elif refusal is not None:
                status, reason = "rejected", refusal[0]
                self._record(conn, command, now, "rejected")
                self._ack(conn, command.id, refusal[1])
            elif command.exp <= now:
                status, reason = "rejected", "expired"
                self._record(conn, command, now, "rejected")
                self._ack(conn, command.id, "expired: command is past its exp")
            else:
                conn.execute("SAVEPOINT apply")
                try:
                    post = self._applier.apply(conn, command)
                except CommandRejected as exc:
                    conn.execute("ROLLBACK TO apply")
                    conn.execute("RELEASE apply")
                    self._record(conn, command, now, "rejected")
                    self._ack(conn, command.id, str(exc))
                    status, reason = "rejected", exc.code
                else:
                    conn.execute("RELEASE apply")
                    self._record(conn, command, now, "ok")
                    self._ack(conn, command.id, None)
                    status, reason = "ok", ""
        self._outbox.notify()
        if status == "ok":
            self.counters["applied"] += 1
        else:
            self._count(f"rejected_{reason}")
            log.warning(
                "command rejected",
                extra={"cmd_id": command.id, "type": command.type, "reason": reason},
            )
        if post is not None:
            try:
                post()
            except Exception:
                log.exception("command action failed after commit", extra={"cmd_id": command.id})
        return CommandOutcome(status, reason, command.id)

    def _reject_unrecorded(
        self, cmd_id: str, reason: str, error: str, env: dict[str, Any]
    ) -> CommandOutcome:
        # Verified but unusable (bad schema, another gateway's gw): answered, and the
        # id recorded so that copies are not answered again.
        self._count(f"rejected_{reason}")
        log.warning("command rejected", extra={"cmd_id": cmd_id, "reason": reason, "error": error})
        exp = _exp_or_now(env.get("exp"), self._now())
        with self._store.write() as conn:
            seen = conn.execute("SELECT 1 FROM link_commands WHERE id = ?", (cmd_id,)).fetchone()
            if seen:
                return CommandOutcome("dropped", reason, cmd_id)
            conn.execute(
                "INSERT INTO link_commands (id, type, exp, received_at, status, replay_acked)"
                " VALUES (?, ?, ?, ?, 'rejected', 1)",
                (cmd_id, str(env.get("type"))[:64], exp, time.time()),
            )
            self._ack(
                conn, cmd_id, error if error.startswith(f"{reason}: ") else f"{reason}: {error}"
            )
        self._outbox.notify()
        return CommandOutcome("rejected", reason, cmd_id)

    def _record(
        self, conn: sqlite3.Connection, command: Command, now: dt.datetime, status: str
    ) -> None:
        conn.execute(
            "INSERT INTO link_commands (id, type, exp, received_at, status) VALUES (?, ?, ?, ?, ?)",
            (command.id, command.type, command.exp.timestamp(), now.timestamp(), status),
        )

    def _ack(self, conn: sqlite3.Connection, cmd_id: str, error: str | None) -> None:
        body: dict[str, Any] = {"cmd_id": cmd_id, "status": "ok" if error is None else "rejected"}
        if error is not None:
            body["error"] = error[:500]
        self._outbox.enqueue_in(conn, "ack", body)

    def _drop(self, reason: str, detail: str) -> CommandOutcome:
        self._count(f"dropped_{reason}")
        self.drop_log.note(reason, detail)
        return CommandOutcome("dropped", reason)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


class DropLog:
    """Warning lines for dropped payloads that a flood cannot multiply.

    Anyone on the broker can publish garbage to ``P/cmd``; each drop is counted (the
    processor's counters), but the log gets the first drop after a quiet interval
    with its detail, then at most one summary line per ``interval_s`` with the count
    per reason since the last line.
    """

    def __init__(
        self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval_s
        self._clock = clock
        self._last: float | None = None
        self._pending: dict[str, int] = {}
        self.lines = 0

    def note(self, reason: str, detail: str) -> None:
        """One dropped payload."""
        now = self._clock()
        if self._last is None or now - self._last >= self._interval:
            if self._pending:
                self.flush()
            else:
                self._last = now
                self.lines += 1
                log.warning("command dropped", extra={"reason": reason, "error": detail})
                return
        self._pending[reason] = self._pending.get(reason, 0) + 1

    def flush(self) -> None:
        """Write the summary of drops not yet logged (called by the periodic prune too)."""
        now = self._clock()
        if not self._pending or (self._last is not None and now - self._last < self._interval):
            return
        counts, self._pending = self._pending, {}
        self._last = now
        self.lines += 1
        log.warning(
            "commands dropped since the last line",
            extra={"counts": counts, "interval_s": self._interval},
        )


def _answerable(cmd_id: object) -> bool:
    if not isinstance(cmd_id, str):
        return False
    try:
        return uuid.UUID(cmd_id).version == 4 and len(cmd_id) == 36
    except ValueError:
        return False


def _exp_or_now(value: object, now: dt.datetime) -> float:
    try:
        return parse_time(value, "exp").timestamp()
    except MessageError:
        return now.timestamp()

"""What the gateway does with each verified platform command (the link's applier)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from agent.contract.limits import PhotoError, check_grant_photos
from agent.contract.messages import Command, CommandRejected
from agent.grants.store import GrantStore, SyncPartRejected

UnlockRequest = Callable[[str, float, str], None]
# OSDP output control carries the timer in tenths of a second in one byte.
MAX_UNLOCK_S = 25.5


class GatewayApplier:
    """``grant.*`` into the grant store; ``lock.unlock`` to the doors; ``ping`` answered."""

    def __init__(
        self,
        grants: GrantStore,
        lock_ids: set[str],
        unlock: UnlockRequest,
        on_grants_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._grants = grants
        self._locks = lock_ids
        self._unlock = unlock
        self._on_grants_changed = on_grants_changed

    def apply(self, conn: sqlite3.Connection, command: Command) -> Callable[[], None] | None:
        """See :class:`agent.sync.commands.CommandApplier`."""
        if command.type in ("grant.put", "grant.sync"):
            grants = [command.body] if command.type == "grant.put" else command.body["grants"]
            try:
                check_grant_photos(grants, "body")
            except PhotoError as exc:
                raise CommandRejected(exc.code, str(exc)) from None
        if command.type.startswith("grant."):
            try:
                self._grants.apply(conn, command)
            except SyncPartRejected as exc:
                raise CommandRejected(exc.code, str(exc)) from None
            return self._on_grants_changed
        if command.type == "lock.unlock":
            lock = command.body["lock"]
            if lock not in self._locks:
                raise CommandRejected(
                    "unknown_lock", f"lock.unlock: no lock {lock!r} on this gateway"
                )
            seconds, reason = float(command.body["seconds"]), str(command.body["reason"])
            if seconds > MAX_UNLOCK_S:
                raise CommandRejected(
                    "invalid_body",
                    f"lock.unlock: seconds {seconds:g} exceeds the locks' limit of {MAX_UNLOCK_S}",
                )
            unlock = self._unlock
            return lambda: unlock(lock, seconds, reason)
        if command.type == "ping":
            return None
        raise CommandRejected("unsupported", f"{command.type}: not handled by this gateway")

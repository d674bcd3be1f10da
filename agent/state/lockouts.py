"""PIN failures and lockouts per lock, kept across restarts under a row MAC.

A restart must not hand an attacker a fresh set of PIN attempts. A row whose
MAC fails (edited to lock every guest out, or to lift a lockout) is ignored,
reported as ``state_tampered``, and the lock starts counting again from the
stored failures it can trust (none).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from agent.state.rowmac import RowMac
from agent.state.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LockoutState:
    """Wrong PINs in a row at one lock and, when locked out, until when (trusted time)."""

    failures: int = 0
    locked_until: float | None = None


class PinLockouts:
    """Durable PIN failure counters and lockouts."""

    def __init__(self, store: Store, macs: RowMac) -> None:
        self._store = store
        self._macs = macs

    def _mac(self, lock_id: str, state: LockoutState) -> str:
        return self._macs.mac("pin_lockout", lock_id, state.failures, state.locked_until)

    def get(self, lock_id: str) -> LockoutState:
        """The lock's state; a row that fails its MAC counts as none (and is reported)."""
        with self._store.read() as conn:
            row = conn.execute(
                "SELECT failures, locked_until, mac FROM pin_lockouts WHERE lock_id = ?",
                (lock_id,),
            ).fetchone()
        if row is None:
            return LockoutState()
        failures, until, mac = row
        state = LockoutState(int(failures), None if until is None else float(until))
        if not self._macs.ok(mac, "pin_lockout", lock_id, state.failures, state.locked_until):
            log.error("PIN lockout row fails its MAC; ignored", extra={"lock": lock_id})
            self._store.record_incident("state_tampered", f"pin_lockouts row of {lock_id}")
            return LockoutState()
        return state

    def put(self, lock_id: str, state: LockoutState) -> None:
        """Keep the lock's state durably."""
        if state.locked_until is not None and not math.isfinite(state.locked_until):
            raise ValueError("locked_until must be finite")
        with self._store.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO pin_lockouts (lock_id, failures, locked_until, mac)"
                " VALUES (?, ?, ?, ?)",
                (lock_id, state.failures, state.locked_until, self._mac(lock_id, state)),
            )

"""The PIN visit: keys typed at the lock, the PIN checked against signed grants, the lockout.

A PIN ends with ``#`` and ``*`` clears. After ``pin_max_attempts`` wrong PINs the
keypad is locked for ``pin_lockout_s``; the warning itself is the single
brute-force rule of :mod:`agent.door.alerts`, fed by every refusal.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from agent.door.decision import DoorHistory, Presentation, decide
from agent.door.doors import DoorDevices, FlowSettings, VisitOutcome
from agent.door.opening import DoorOpener
from agent.door.records import door_opened
from agent.grants.store import GrantStore
from agent.state.clock import ClockGuard


@dataclass
class _Keypad:
    keys: str = ""
    keys_at: float = 0.0
    failures: int = 0
    locked_until: float | None = None


class PinVisit:
    """Buffers each lock's keys and decides complete PINs."""

    def __init__(
        self,
        *,
        grants: GrantStore,
        clock: ClockGuard,
        settings: FlowSettings,
        opener: DoorOpener,
    ) -> None:
        self._grants = grants
        self._clock = clock
        self._settings = settings
        self._opener = opener
        self._pads: dict[str, _Keypad] = {}

    def history(self, lock: str) -> DoorHistory:
        """The lock's PIN failures and lockout, as the decision sees them."""
        pad = self._pads.get(lock)
        return DoorHistory() if pad is None else DoorHistory(pad.failures, pad.locked_until)

    def typed(self, lock: str, digits: str) -> str | None:
        """Add keys typed at ``lock``; a complete PIN when ``#`` ends one."""
        pad = self._pads.setdefault(lock, _Keypad())
        now = time.monotonic()
        if now - pad.keys_at > self._settings.pin_entry_timeout_s:
            pad.keys = ""
        pad.keys_at = now
        for key in digits:
            if key == "*":
                pad.keys = ""
            elif key == "#":
                pin, pad.keys = pad.keys, ""
                if pin:
                    return pin
            elif key.isdigit() and len(pad.keys) < self._settings.pin_max_len:
                pad.keys += key
        return None

    async def visit(self, door: DoorDevices, pin: str) -> VisitOutcome:
        """One complete PIN at ``door``."""
        started = time.perf_counter()
        now = self._clock.now()
        pad = self._pads.setdefault(door.lock_id, _Keypad())
        candidates = await asyncio.to_thread(self._grants.guests_for_pin, pin)
        decision = decide(
            Presentation(lock=door.lock_id, kind="pin", pin=pin),
            candidates,
            self.history(door.lock_id),
            self._settings.policy,
            now,
            self._clock.last_contact(),
        )
        if not decision.granted:
            if decision.reason == "pin_wrong":
                pad.failures += 1
                if pad.failures >= self._settings.policy.pin_max_attempts:
                    pad.locked_until = now + self._settings.policy.pin_lockout_s
                    pad.failures = 0
            return await self._opener.refuse(door, decision, started, id_number=None, method="pin")
        pad.failures = 0
        assert decision.guest is not None
        body = door_opened(
            lock=door.lock_id, method=["pin"], at=now, grant_id=decision.guest.grant_id
        )
        return await self._opener.admit(door, decision, [("door.opened", body)], started, now=now)

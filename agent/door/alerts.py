"""Warning rules: which happenings at the doors become alerts to the platform.

Each rule is switched and tuned by the configuration. The rules keep only short
sliding windows in memory and return the alerts to send as (type, body) pairs;
the caller commits them to the outbox (alerts go out ahead of queued events)
in the same transaction as the records they belong to.
No ID number appears in an alert but masked; repeated unknown cards are
tracked by keyed hash only.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

Alert = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class AlertPolicy:
    """Thresholds and switches of the warning rules."""

    identity_mismatch: bool = True
    unregistered_occupant: bool = True
    door_forced: bool = True
    door_held_open: bool = True
    tamper: bool = True
    lock_offline: bool = True
    brute_force_count: int = 5
    brute_force_window_s: float = 300.0
    unknown_card_count: int = 3
    unknown_card_window_s: float = 3600.0


class AlertRules:
    """The rules' memory (recent denials, unknown cards) and their verdicts."""

    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy
        self._denials: dict[str, deque[float]] = defaultdict(deque)
        self._unknown: dict[str, deque[float]] = defaultdict(deque)

    def on_identity_mismatch(self, lock: str, at: str, evidence: dict[str, Any]) -> list[Alert]:
        """A valid card with a grant, and a face that is not its holder's."""
        if not self.policy.identity_mismatch:
            return []
        return [("alert.identity_mismatch", {"lock": lock, "at": at, **evidence})]

    def on_denial(self, lock: str, at: str, now: float, reason: str) -> list[Alert]:
        """Any refusal at a door: too many within the window is a brute-force alert."""
        window = self._denials[lock]
        _slide(window, now, self.policy.brute_force_window_s)
        window.append(now)
        if len(window) == self.policy.brute_force_count:
            return [
                (
                    "alert.brute_force",
                    {
                        "lock": lock,
                        "at": at,
                        "failures": len(window),
                        "window_s": self.policy.brute_force_window_s,
                        "last_reason": reason,
                    },
                )
            ]
        return []

    def on_unknown_card(
        self, lock: str, at: str, now: float, id_hash: str, masked: str
    ) -> list[Alert]:
        """A card in no grant; the same card presented repeatedly raises an alert."""
        window = self._unknown[id_hash]
        _slide(window, now, self.policy.unknown_card_window_s)
        window.append(now)
        if len(window) == self.policy.unknown_card_count:
            return [
                (
                    "alert.unknown_card",
                    {
                        "lock": lock,
                        "at": at,
                        "presentations": len(window),
                        "window_s": self.policy.unknown_card_window_s,
                        "id_number_masked": masked,
                    },
                )
            ]
        return []

    def on_occupants(
        self, lock: str, at: str, counted: int, verified: int, grant_id: str | None
    ) -> list[Alert]:
        """More faces passed than guests were verified for this opening."""
        if not self.policy.unregistered_occupant or counted <= verified:
            return []
        body: dict[str, Any] = {
            "lock": lock,
            "at": at,
            "faces_counted": counted,
            "guests_verified": verified,
        }
        if grant_id is not None:
            body["grant_id"] = grant_id
        return [("alert.unregistered_occupant", body)]

    def on_door_state(self, lock: str, at: str, state: str) -> list[Alert]:
        """Forced and held-open doors."""
        if state == "forced" and self.policy.door_forced:
            return [("alert.door_forced", {"lock": lock, "at": at, "state": state})]
        if state == "held_open" and self.policy.door_held_open:
            return [("alert.door_held_open", {"lock": lock, "at": at, "state": state})]
        return []

    def on_lock_status(
        self, lock: str, at: str, online: bool, tamper: bool, was_online: bool, was_tamper: bool
    ) -> list[Alert]:
        """Tamper switch opened; lock stopped answering."""
        alerts: list[Alert] = []
        if tamper and not was_tamper and self.policy.tamper:
            alerts.append(("alert.tamper", {"lock": lock, "at": at, "tamper": True}))
        if not online and was_online and self.policy.lock_offline:
            alerts.append(("alert.lock_offline", {"lock": lock, "at": at, "online": False}))
        return alerts


def _slide(window: deque[float], now: float, span: float) -> None:
    while window and now - window[0] > span:
        window.popleft()

"""The grant model: what a verified grant says about one guest (pure data, no storage)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class GrantPolicy:
    """Per-grant policy from the platform, on top of the site's."""

    pin_reentry: bool = True
    liveness: Literal["off", "blink", "pad", "pad+blink"] | None = None
    """What the grant asks for; the site's setting is a floor it cannot lower (door decision)."""

    @classmethod
    def from_body(cls, raw: object) -> GrantPolicy:
        """Read the optional ``policy`` object; unknown members are ignored."""
        if not isinstance(raw, dict):
            return cls()
        liveness = raw.get("liveness")
        modes: dict[object, Literal["off", "blink", "pad", "pad+blink"]] = {
            "off": "off",
            "blink": "blink",
            "pad": "pad",
            "pad+blink": "pad+blink",
        }
        return cls(pin_reentry=bool(raw.get("pin_reentry", True)), liveness=modes.get(liveness))


@dataclass(frozen=True)
class VerifiedGuest:
    """One guest of one grant, as the platform signed it (verified just now)."""

    grant_id: str
    guest_id: str
    room: str
    locks: tuple[str, ...]
    valid_from: float
    valid_until: float
    policy: GrantPolicy
    has_photo: bool
    checked_in_at: float | None
    template_status: str
    # Held in memory only, for comparison with the card; never logged.
    id_number: str = field(repr=False)
    name: str = field(default="", repr=False)
    pin: str | None = field(default=None, repr=False)

    def covers(self, lock: str) -> bool:
        """The grant names this lock."""
        return lock in self.locks

"""Recent gateway messages as metadata only, for ``lockgw events tail``.

The outbox holds only ciphertext, sealed to the platform; the gateway cannot
(and should not) read its own sealed records back. So as records are
committed, their non-personal fields are kept here in a bounded ring: seq,
type, lock, state, reason, method, grant and guest ids, times. Names, ID
numbers, addresses and photos never enter it.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

# Body fields that are not personal data and help a technician.
SAFE_FIELDS = (
    "lock",
    "state",
    "reason",
    "method",
    "grant_id",
    "guest_id",
    "online",
    "tamper",
    "at",
    "faces_counted",
    "guests_verified",
    "failures",
    "presentations",
    "kind",
    "incident",
    "cmd_id",
    "status",
)


class Journal:
    """A thread-safe ring of the last ``size`` records' metadata."""

    def __init__(self, size: int = 1000) -> None:
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seq: int | None, msg_type: str, body: dict[str, Any]) -> None:
        """Keep the metadata of one committed record (``seq`` None: refused at the bound)."""
        entry: dict[str, Any] = {"seq": seq, "type": msg_type}
        entry.update({k: body[k] for k in SAFE_FIELDS if k in body})
        with self._lock:
            self._ring.append(entry)

    def since(self, after_seq: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Entries with seq above ``after_seq``, oldest first, at most the last ``limit``."""
        with self._lock:
            found = [e for e in self._ring if (e["seq"] or 0) > after_seq]
        return found[-limit:]

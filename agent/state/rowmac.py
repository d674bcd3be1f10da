"""Keyed MACs on database rows that can grant something, so an edited row opens nothing.

A MAC is HMAC-SHA256 under the gateway's local key (:class:`SecretBox`'s hashing
key), over the row's kind and its fields, each encoded unambiguously. Binding
the grant id, the guest id and the grant's version into the MAC means a row
copied to another grant or guest, or an older version put back, fails.
"""

from __future__ import annotations

import hmac
import json

from agent.state.secretbox import SecretBox

Field = str | int | float | None


class RowMac:
    """Computes and checks row MACs under the local key."""

    def __init__(self, box: SecretBox) -> None:
        self._box = box

    def mac(self, kind: str, *fields: Field) -> str:
        """The MAC of one row of ``kind`` (hex)."""
        # JSON keeps types apart (1 vs "1" vs 1.0 vs null) and cannot be split ambiguously.
        return self._box.keyed_hash(json.dumps(list(fields), separators=(",", ":")), f"row:{kind}")

    def ok(self, stored: object, kind: str, *fields: Field) -> bool:
        """The stored MAC matches the row (constant-time); a missing MAC never does."""
        return isinstance(stored, str) and hmac.compare_digest(stored, self.mac(kind, *fields))

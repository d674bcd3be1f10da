"""Once per presentation: a code is passed on the first time it is seen, not again
while it could still be valid.

A camera sees the same code in every frame while the phone is held up, and a
scanner module may send it several times; a code is single-use at the identity
service, so sending it twice would only make the second request fail. A code is
remembered (as a keyed digest, never as text) for ``lifetime_s``, the longest a
code stays valid; the clock is an argument so the rule is pure.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


class SeenCodes:
    """Remembers digests of codes for ``lifetime_s`` seconds."""

    def __init__(self, lifetime_s: float = 300.0, *, max_entries: int = 4096) -> None:
        self._lifetime = lifetime_s
        self._max = max_entries
        self._key = secrets.token_bytes(16)
        self._seen: dict[bytes, float] = {}
        self.repeats = 0

    def first_time(self, text: str, now: float) -> bool:
        """True when ``text`` was not seen in the last ``lifetime_s``; remembers it."""
        self._forget_before(now - self._lifetime)
        digest = hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).digest()
        if digest in self._seen:
            self.repeats += 1
            return False
        if len(self._seen) >= self._max:
            # Oldest first (dicts keep insertion order).
            self._seen.pop(next(iter(self._seen)))
        self._seen[digest] = now
        return True

    def _forget_before(self, cutoff: float) -> None:
        while self._seen:
            digest, at = next(iter(self._seen.items()))
            if at > cutoff:
                break
            del self._seen[digest]

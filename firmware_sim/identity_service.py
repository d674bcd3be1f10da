"""A stand-in for the national identity service behind the platform (网证 codes).

It issues short-lived, single-use codes for test identities and verifies them as
the platform would: a code unknown, already used or past its lifetime fails; a
request without a usable live face image fails. It does not compare faces (the
gateway matches the live face against the guest's template at the door). The
service can be made slow, failing or unreachable to test the gateway's timeouts.

Codes look like the real app's: an opaque printable token; the gateway never
interprets them.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["normal", "slow", "failing", "unreachable"]
CODE_PREFIX = "CTID1."


@dataclass(frozen=True)
class SimIdentity:
    """A synthetic person the service knows (fields as in ``eid.result``'s identity)."""

    name: str
    sex: Literal["1", "2"]
    nation: str
    birth: str  # YYYYMMDD
    id_number: str
    address: str = ""
    valid_until: str = ""

    def as_body(self) -> dict[str, str]:
        """The ``identity`` object of a verified ``eid.result``."""
        body = {
            "name": self.name,
            "sex": self.sex,
            "nation": self.nation,
            "birth": self.birth,
            "id_number": self.id_number,
        }
        if self.address:
            body["address"] = self.address
        if self.valid_until:
            body["valid_until"] = self.valid_until
        return body


@dataclass
class _Issued:
    identity: SimIdentity
    expires_at: float
    used: bool = False


@dataclass(frozen=True)
class Verdict:
    """The service's answer to one code."""

    status: Literal["verified", "failed"]
    error: str | None = None
    identity: SimIdentity | None = None


@dataclass
class IdentityService:
    """Issues and verifies codes; ``mode`` and ``delay_s`` shape how it answers."""

    lifetime_s: float = 120.0
    mode: Mode = "normal"
    delay_s: float = 0.0  # how long an answer takes in "slow" mode
    clock: Callable[[], float] = time.time
    _codes: dict[str, _Issued] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    counters: dict[str, int] = field(default_factory=dict)

    def issue(self, identity: SimIdentity, *, lifetime_s: float | None = None) -> str:
        """A fresh single-use code for ``identity`` (negative lifetime: already expired)."""
        code = CODE_PREFIX + secrets.token_urlsafe(32)
        life = self.lifetime_s if lifetime_s is None else lifetime_s
        with self._lock:
            self._codes[code] = _Issued(identity, self.clock() + life)
        return code

    def verify(self, code: str, live_jpeg_b64: str) -> Verdict:
        """Check a code (and that a face image came with it); the code is used up."""
        if self.mode == "failing":
            return self._count(Verdict("failed", "service_error: identity service failed"))
        with self._lock:
            issued = self._codes.get(code)
            problem = None
            if issued is None:
                problem = "code_unknown"
            elif issued.used:
                problem = "code_used"
            else:
                issued.used = True
                if self.clock() > issued.expires_at:
                    problem = "code_expired"
        if problem is not None or issued is None:
            return self._count(Verdict("failed", problem))
        if not _is_jpeg(live_jpeg_b64):
            return self._count(Verdict("failed", "face_missing"))
        return self._count(Verdict("verified", None, issued.identity))

    def answer_delay(self) -> float | None:
        """Seconds before the answer, or None when the service does not answer."""
        if self.mode == "unreachable":
            return None
        return self.delay_s if self.mode == "slow" else 0.0

    def _count(self, verdict: Verdict) -> Verdict:
        name = verdict.status if verdict.error is None else verdict.error.split(":")[0]
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + 1
        return verdict


def _is_jpeg(b64: str) -> bool:
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    return data[:3] == b"\xff\xd8\xff" and len(data) > 100


def result_body(request_id: str, verdict: Verdict) -> dict[str, Any]:
    """The ``eid.result`` body for one verdict."""
    body: dict[str, Any] = {"request_id": request_id, "status": verdict.status}
    if verdict.error is not None:
        body["error"] = verdict.error
    if verdict.identity is not None:
        body["identity"] = verdict.identity.as_body()
    return body

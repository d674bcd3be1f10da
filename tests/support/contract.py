"""The contract as a check: every sealed gateway message validated against its JSON Schema.

``docs/schemas/gateway-messages.json`` (referenced from ``docs/asyncapi.yaml``)
has one closed schema per message type; :class:`ContractChecker` validates
envelopes with the ``jsonschema`` library and keeps what failed. The suite's
autouse fixture (``tests/conftest.py``) feeds it every message the gateway
seals in this process and every message the platform simulator receives, so
an undocumented type or field, or a missing required one, fails the test that
produced it.
"""

from __future__ import annotations

import json
import threading
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "gateway-messages.json"


@cache
def _schema() -> dict[str, Any]:
    return dict(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


@cache
def _validator(msg_type: str) -> Draft202012Validator | None:
    doc = _schema()
    if msg_type not in doc["$defs"] or msg_type.endswith(".body"):
        return None
    registry: Registry = Registry().with_resource(doc["$id"], Resource.from_contents(doc))
    return Draft202012Validator({"$ref": f"{doc['$id']}#/$defs/{msg_type}"}, registry=registry)


def documented_types() -> set[str]:
    """Every gateway message type the schema file documents."""
    return {k for k, v in _schema()["$defs"].items() if "allOf" in v}


def problems(envelope: object) -> list[str]:
    """What is wrong with one gateway message envelope (empty when it fits the contract)."""
    if not isinstance(envelope, dict):
        return ["message is not an object"]
    msg_type = str(envelope.get("type"))
    validator = _validator(msg_type)
    if validator is None:
        return [f"{msg_type}: type not documented in {SCHEMA_PATH.name}"]
    found = []
    for error in validator.iter_errors(envelope):
        where = "/".join(str(p) for p in error.absolute_path) or "(envelope)"
        # The message names the field, never quotes a whole value (personal data).
        found.append(f"{msg_type}: {where}: {error.message[:160]}")
    return found


class ContractChecker:
    """Collects contract violations from any thread; the fixture fails the test with them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.violations: list[str] = []
        self.checked = 0

    def check(self, envelope: object, source: str) -> None:
        """Validate one envelope seen at ``source`` (``seal`` or ``platform``)."""
        found = problems(envelope)
        with self._lock:
            self.checked += 1
            self.violations += [f"[{source}] {p}" for p in found]

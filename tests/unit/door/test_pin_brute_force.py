"""The brute-force warning is one rule with one body: wrong PINs up to the lockout raise it once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from agent.contract.keys import (
    create_gateway_keys,
    load_gateway_keys,
    load_platform_keys,
    new_key,
    public_set,
)
from agent.door.alerts import AlertPolicy, AlertRules
from agent.door.decision import SitePolicy
from agent.door.doors import DoorDevices, FlowSettings
from agent.door.flow import DoorFlow
from agent.grants.store import GrantStore
from agent.state.clock import ClockGuard
from agent.state.secretbox import SecretBox
from agent.state.store import Store
from agent.sync.journal import Journal
from agent.sync.outbox import Outbox


class QuietBus:
    def __init__(self) -> None:
        self.denied = 0

    def unlock(self, address: int, seconds: float) -> None:
        raise AssertionError("a wrong PIN must never unlock")

    def feedback(self, address: int, granted: bool) -> None:
        self.denied += not granted


def _flow(tmp_path: Path, bus: QuietBus, journal: Journal) -> DoorFlow:
    keys = tmp_path / "keys"
    keys.mkdir()
    create_gateway_keys(keys / "gateway.jwks")
    platform = {
        "keys": [new_key("Ed25519").as_dict(private=True), new_key("X25519").as_dict(private=True)]
    }
    (keys / "platform.jwks").write_text(json.dumps(public_set(platform)), encoding="utf-8")
    pf_keys = load_platform_keys(keys / "platform.jwks")
    store = Store.open(tmp_path / "lockgw.db")
    outbox = Outbox(store, "pin-gw-01", load_gateway_keys(keys / "gateway.jwks"), pf_keys)
    outbox.add_record_observer(journal.add)
    grants = GrantStore(store, SecretBox.load_or_create(tmp_path / "local.key"), pf_keys)
    clock = ClockGuard(store)
    clock.observe_trusted(time.time())  # the platform was heard from just now
    return DoorFlow(
        store=store,
        outbox=outbox,
        grants=grants,
        clock=clock,
        rules=AlertRules(AlertPolicy()),  # the defaults: brute_force_count 5
        face=None,
        doors=[DoorDevices("L1", "101", "bus0", 1, 1.0, bus, None)],
        settings=FlowSettings(SitePolicy()),  # the defaults: 5 PIN attempts, then the lockout
    )


def test_fifth_wrong_pin_with_defaults_raises_exactly_one_brute_force(tmp_path: Path) -> None:
    assert AlertPolicy().brute_force_count == SitePolicy().pin_max_attempts == 5
    bus, journal = QuietBus(), Journal()
    flow = _flow(tmp_path, bus, journal)

    async def type_pins(count: int) -> list[str]:
        reasons = []
        for _ in range(count):
            outcome = await flow.keypad("L1", "000000#")
            assert outcome is not None and not outcome.granted
            reasons.append(outcome.reason)
        return reasons

    reasons = asyncio.run(type_pins(5))
    assert reasons == ["pin_wrong"] * 5
    alerts = [e for e in journal.since() if e["type"] == "alert.brute_force"]
    assert len(alerts) == 1, alerts
    assert alerts[0]["failures"] == 5
    # The keypad is locked now; further tries are refused as such and raise no second alert.
    assert asyncio.run(type_pins(2)) == ["pin_locked_out"] * 2
    assert [e["type"] for e in journal.since()].count("alert.brute_force") == 1
    assert bus.denied == 7

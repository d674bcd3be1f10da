"""The durable outbox: sealed at rest, seq never repeats, priority order, the byte bound."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from agent.contract.keys import create_gateway_keys, load_gateway_keys, load_platform_keys
from agent.contract.messages import MessageError, format_time
from agent.state.store import Store
from agent.sync.outbox import Outbox
from firmware_sim.platform import SimKeys, open_jw

GW = "bldg-001"
ID_NUMBER = "11010519491231002X"
NAME = "欧阳娜娜"


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.platform = SimKeys()
        create_gateway_keys(tmp / "gateway.jwks")
        (tmp / "platform.jwks").write_text(json.dumps(self.platform.public_jwks()))
        self.gw_keys = load_gateway_keys(tmp / "gateway.jwks")
        self.pf_keys = load_platform_keys(tmp / "platform.jwks")
        self.store = Store.open(tmp / "lockgw.db")

    def outbox(self, **kw: Any) -> Outbox:
        return Outbox(self.store, GW, self.gw_keys, self.pf_keys, **kw)

    def reopen(self) -> None:
        self.store.close()
        self.store = Store.open(self.tmp / "lockgw.db")

    def open(self, sealed: str) -> dict[str, Any]:
        from jwcrypto import jwk

        verify = {
            k["kid"]: jwk.JWK(**k) for k in self.gw_keys.public_set["keys"] if k["crv"] == "Ed25519"
        }
        return open_jw(sealed, self.platform.enc, verify)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def at() -> str:
    return format_time(dt.datetime.now(dt.UTC))


def checkin() -> dict[str, Any]:
    return {
        "lock": "door-1",
        "room": "101",
        "grant_id": "g-1",
        "guest_id": "p-1",
        "name": NAME,
        "card_type": "resident",
        "sex": "2",
        "nation": "01",
        "birth": "19491231",
        "address": "北京市东城区某街道1号",
        "id_number": ID_NUMBER,
        "issuer": "北京市公安局",
        "valid_from": "20200101",
        "valid_until": "20400101",
        "card_photo_b64": "AAAA",
        "card_photo_format": "wlt",
        "live_jpeg_b64": "/9j/AAAA",
        "face_distance": 0.38,
        "face_threshold": 0.5,
        "liveness": {"mode": "off"},
        "at": at(),
    }


def door_state(i: int = 0) -> dict[str, Any]:
    # A long lock id makes each snapshot a few hundred bytes, like a real outbox row.
    return {"lock": f"door-{i % 7}-" + "x" * 120, "state": "closed", "at": at()}


def opened() -> dict[str, Any]:
    return {"lock": "door-1", "method": ["id_card", "face"], "grant_id": "g-1", "at": at()}


def test_disk_holds_only_ciphertext(env: Env) -> None:
    box = env.outbox()
    seq = box.enqueue("checkin.verified", checkin())
    env.store.close()
    raw = b"".join(p.read_bytes() for p in env.tmp.glob("lockgw.db*"))
    for secret in (ID_NUMBER, NAME, "北京市东城区"):
        assert secret.encode() not in raw
    env.store = Store.open(env.tmp / "lockgw.db")
    item = env.outbox().next_batch({}, 10)[0]
    body = env.open(item.sealed)
    assert (body["seq"], body["gw"], body["type"]) == (seq, GW, "checkin.verified")
    assert body["body"]["id_number"] == ID_NUMBER


def test_seq_grows_by_one_and_never_repeats_across_restarts_and_emptying(env: Env) -> None:
    box = env.outbox()
    assert box.enqueue_many([("door.opened", opened())] * 3) == [1, 2, 3]
    assert box.ack_through(3) == 3
    assert box.stats().depth == 0
    env.reopen()
    box = env.outbox()
    assert box.enqueue("door.opened", opened()) == 4
    assert box.acked_through == 3


def test_failed_transaction_uses_no_seq(env: Env) -> None:
    box = env.outbox()
    box.enqueue("door.opened", opened())
    with pytest.raises(RuntimeError), env.store.write() as conn:
        box.enqueue_in(conn, "door.opened", opened())
        raise RuntimeError("crash before commit")
    with pytest.raises(MessageError, match="grant_id"):
        box.enqueue("door.opened", {"lock": "door-1", "method": ["id_card"], "at": at()})
    assert box.enqueue("door.opened", opened()) == 2
    assert box.stats().depth == 2


def test_alerts_then_acks_then_events(env: Env) -> None:
    box = env.outbox()
    box.enqueue("door.opened", opened())
    box.enqueue("ack", {"cmd_id": "c1", "status": "ok"})
    box.enqueue("door.opened", opened())
    box.enqueue("alert.tamper", {"lock": "door-1", "at": at(), "tamper": True})
    items = box.next_batch({}, 10)
    assert [(i.seq, i.kind) for i in items] == [(4, "alert"), (2, "ack"), (1, "evt"), (3, "evt")]
    # the cursor per priority continues where publishing stopped
    assert [i.seq for i in box.next_batch({0: 4, 1: 2, 2: 1}, 10)] == [3]
    assert [i.seq for i in box.next_batch({}, 2)] == [4, 2]


def test_ack_through_releases_ranges_and_refuses_the_future(env: Env) -> None:
    box = env.outbox()
    box.enqueue_many([("door.opened", opened())] * 10)
    assert box.ack_through(4) == 4
    assert box.ack_through(2) == 0  # older ack: nothing more
    assert [i.seq for i in box.next_batch({}, 100)] == [5, 6, 7, 8, 9, 10]
    with pytest.raises(ValueError, match="beyond the last seq 10"):
        box.ack_through(11)
    assert box.stats().depth == 6


def test_bound_drops_oldest_droppable_and_announces_it(env: Env) -> None:
    limit = 1024 * 1024
    box = env.outbox(max_bytes=limit, warn_ratio=0.5)
    box.enqueue("checkin.verified", checkin())
    box.enqueue("door.opened", opened())
    n = 0
    while box.counters["dropped"] == 0:
        box.enqueue_many([("door.state", door_state(n + i)) for i in range(50)])
        n += 50
        assert n < 5000
    stats = box.stats()
    assert stats.bytes <= limit
    rows = box.next_batch({}, 100_000)
    types = [r.type for r in rows]
    # never dropped: the check-in, the opening, the alert
    assert types.count("checkin.verified") == 1 and types.count("door.opened") == 1
    assert types.count("alert.outbox_near_full") == 1
    notices = [env.open(r.sealed)["body"] for r in rows if r.type == "outbox.dropped"]
    assert len(notices) == 1
    dropped = [s for a, b in notices[0]["seqs"] for s in range(a, b + 1)]
    assert notices[0]["count"] == len(dropped) == box.counters["dropped"]
    assert notices[0]["types"] == {"door.state": len(dropped)}
    present = {r.seq for r in rows}
    assert not present & set(dropped)
    # the oldest droppable went first: every dropped seq is below every kept door.state
    kept_states = [r.seq for r in rows if r.type == "door.state"]
    assert max(dropped) < min(kept_states)
    # every seq ever assigned is either present or announced as dropped
    assert present | set(dropped) == set(range(1, stats.last_seq + 1))


def test_critical_messages_are_kept_past_the_bound_and_droppables_refused(env: Env) -> None:
    limit = 1024 * 1024
    box = env.outbox(max_bytes=limit)
    big = checkin() | {"live_jpeg_b64": "A" * 100_000}
    for _ in range(12):
        assert box.enqueue("checkin.verified", big) is not None
    assert box.stats().bytes > limit
    assert box.enqueue("door.state", door_state()) is None
    assert box.counters["refused_at_bound"] == 1
    assert box.enqueue("alert.tamper", {"lock": "door-1", "at": at(), "tamper": True}) is not None
    types = [r.type for r in box.next_batch({}, 100)]
    assert types.count("checkin.verified") == 12 and "door.state" not in types


def test_near_full_alert_once_then_rearmed_after_draining(env: Env) -> None:
    box = env.outbox(max_bytes=1024 * 1024, warn_ratio=0.3)
    big = checkin() | {"live_jpeg_b64": "A" * 100_000}
    for _ in range(6):
        box.enqueue("checkin.verified", big)
    alerts = [r for r in box.next_batch({}, 100) if r.type == "alert.outbox_near_full"]
    assert len(alerts) == 1
    body = env.open(alerts[0].sealed)["body"]
    assert body["max_bytes"] == 1024 * 1024 and body["bytes"] >= 0.3 * 1024 * 1024
    box.ack_through(box.stats().last_seq)
    for _ in range(6):
        box.enqueue("checkin.verified", big)
    alerts = [r for r in box.next_batch({}, 100) if r.type == "alert.outbox_near_full"]
    assert len(alerts) == 1 and box.counters["near_full_alerts"] == 2

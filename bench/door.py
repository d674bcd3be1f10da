"""Door figures: the decision with 10,000 grants stored, and presentation-to-relay latency.

Prints one JSON line last:
{"decide_ms_p99_10k_grants": …, "card_to_unlock_ms_p95": …, "card_face_to_unlock_ms_p95": …}

- decide: finding the guest's grants by keyed hash, checking the rows' MACs, re-verifying
  each signed grant and the decision itself, against a store holding 10,000 grants put
  through the real command path; beside it the same lookup without the row MACs (as it
  was before them) and the MAC checks alone (target ≤ 1 ms at p99).
- card only: a checked-in guest re-enters with the card (site policy allows card-only
  re-entry), from the card touching the simulated reader to the simulated relay switching,
  with the real daemon, reader at 115200 baud and OSDP locks with secure channel.
- card + face: the same with the face checked at 480p (the guest's first entry each time).
Targets: decide ≤ 5 ms, card only ≤ 300 ms, card + face ≤ 1,000 ms at p95.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import repo_path  # noqa: F401  (first: puts the checkout on sys.path)
from joserfc.jwk import OKPKey

from agent.contract.keys import (
    create_gateway_keys,
    load_gateway_keys,
    load_platform_keys,
    new_key,
    public_set,
)
from agent.contract.messages import make_envelope
from agent.contract.seal import seal
from agent.door.decision import DoorHistory, Presentation, SitePolicy, decide
from agent.grants.store import _LOOKUP, GrantStore
from agent.state.secretbox import SecretBox
from agent.sync.applier import GatewayApplier
from agent.sync.commands import CommandProcessor
from agent.sync.outbox import Outbox
from firmware_sim.guests import make_guest
from firmware_sim.idcards import make_id_number, sample_card
from firmware_sim.photos import GUEST_A
from firmware_sim.site import SimulatedSite

GRANTS = 10_000


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def bench_decide(workdir: Path, lookups: int = 2000) -> dict[str, float]:
    """Decision latency with 10,000 grants stored."""
    from datetime import date

    from agent.state.store import Store

    keys = workdir / "keys"
    keys.mkdir()
    create_gateway_keys(keys / "gateway.jwks")
    sig, enc = new_key("Ed25519"), new_key("X25519")
    platform = {"keys": [sig.as_dict(private=True), enc.as_dict(private=True)]}
    (keys / "platform.jwks").write_text(json.dumps(public_set(platform)), encoding="utf-8")
    gw_keys = load_gateway_keys(keys / "gateway.jwks")
    pf_keys = load_platform_keys(keys / "platform.jwks")
    gw_enc = OKPKey.import_key(next(k for k in gw_keys.public_set["keys"] if k["crv"] == "X25519"))
    store = Store.open(workdir / "lockgw.db")
    outbox = Outbox(store, "bench-gw", gw_keys, pf_keys)
    grants = GrantStore(store, SecretBox.load_or_create(workdir / "local.key"), pf_keys)
    processor = CommandProcessor(
        store, outbox, "bench-gw", gw_keys, pf_keys, GatewayApplier(grants, {"L1"}, lambda *a: None)
    )
    now = dt.datetime.now(dt.UTC)
    numbers = []
    began = time.perf_counter()
    for i in range(GRANTS):
        number = make_id_number(
            date(1960 + i % 40, 1 + i % 12, 1 + i % 28), f"{110101 + i // 100}", i % 100, 1
        )
        numbers.append(number)
        body = {
            "grant_id": f"G{i:05d}",
            "room": f"{100 + i % 400}",
            "locks": [f"L{i % 64}", "L1"],
            "valid_from": (now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "valid_until": (now + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "guests": [{"guest_id": f"p{i}", "id_number": number, "name": "测试"}],
        }
        env = make_envelope("grant.put", "bench-gw", body, exp=now + dt.timedelta(hours=1), now=now)
        outcome = processor.handle(seal(env, sig, gw_enc).encode())
        assert outcome.status == "ok", outcome
    load_s = time.perf_counter() - began
    policy = SitePolicy(reentry_requires_face=False)
    ts = now.timestamp()
    unchecked = _UncheckedGrantStore(store, grants)
    samples: list[float] = []
    before: list[float] = []
    mac_only: list[float] = []

    def timed(lookup: Any, number: str) -> float:
        t0 = time.perf_counter()
        decision = decide(
            Presentation(lock="L1", kind="card", id_number=number),
            lookup(number),
            DoorHistory(),
            policy,
            ts,
            ts,
        )
        elapsed = (time.perf_counter() - t0) * 1000
        assert decision.needs_face or decision.granted
        return elapsed

    # The path with the row MACs and the one without them (as before), interleaved on the
    # same store, and the MAC checks alone on the rows of each lookup.
    for j in range(lookups):
        number = numbers[(j * 7919) % GRANTS]
        samples.append(timed(grants.guests_for_card, number))
        before.append(timed(unchecked.guests_for_card, number))
        mac_only.append(unchecked.mac_check_ms(number))
    store.close()
    return {
        "decide_ms_p50_10k_grants": _pct(samples, 0.5),
        "decide_ms_p99_10k_grants": _pct(samples, 0.99),
        "decide_ms_p99_10k_grants_without_row_macs": _pct(before, 0.99),
        "row_mac_check_ms_p99_10k_grants": _pct(mac_only, 0.99),
        "load_10k_grants_s": round(load_s, 1),
    }


class _UncheckedGrantStore(GrantStore):
    """The lookup as it was before row MACs (bench only): the same rows, no row checks."""

    def __init__(self, store: Any, real: GrantStore) -> None:
        self._real = real
        self.__dict__.update(real.__dict__)

    def _authentic(self, query: str, key: str) -> list[Any]:
        with self._store.read() as conn:
            return list(conn.execute(query, (key,)).fetchall())

    def mac_check_ms(self, number: str) -> float:
        """What the checks alone cost on this card's rows: the set, then each row."""
        rows = self._authentic(f"{_LOOKUP} WHERE gg.id_hash = ?", self.id_hash(number))
        with self._store.read() as conn:
            t0 = time.perf_counter()
            ok = self._real._set_intact(conn) and all(self._real._row_ok(r, conn) for r in rows)
            elapsed = (time.perf_counter() - t0) * 1000
        assert ok
        return elapsed


def bench_site(rounds: int, samples_out: Path | None = None) -> dict[str, float]:
    """Card to relay, card only and card + face, on the simulated building."""
    overrides = {"doors": {"unlock_seconds": 1}, "policy": {"reentry_requires_face": False}}
    card_only: list[float] = []
    card_face: list[float] = []
    with SimulatedSite(["L101"], config_overrides=overrides) as site:
        building, platform = site.building, site.building.platform
        for _ in range(rounds):
            guest = make_guest(GUEST_A)
            guest.card = sample_card(
                name=guest.card.name,
                sex=guest.card.sex,
                birth=guest.card.birth,
                id_number=guest.card.id_number,
            )  # a 1,024-byte WLT photo, as real cards carry
            ready = site.gateway_status()["grants"]["templates_ready"]
            cmd = platform.put_grant(f"G-{guest.guest_id}", ["L101"], [guest.entry()])
            platform.wait_ack(cmd)
            # Grants arrive ahead of the guest: wait until the photo's template is made.
            deadline = time.monotonic() + 30
            while site.gateway_status()["grants"]["templates_ready"] <= ready:
                if time.monotonic() > deadline:
                    raise RuntimeError("the grant's face template was not made")
                time.sleep(0.2)
            for needs_face, samples in ((True, card_face), (False, card_only)):
                building.remove_card("L101")
                building.show_face("L101", guest.live_photo if needs_face else None)
                building.wait_relay("L101", False, timeout=30)
                time.sleep(0.6)
                t0 = time.monotonic()
                building.present_card("L101", guest.card)
                if not building.wait_relay("L101", True, timeout=10):
                    raise RuntimeError("the door did not open; see " + str(site.log_path))
                samples.append((time.monotonic() - t0) * 1000)
    if samples_out is not None:
        samples_out.write_text(
            json.dumps({"card_only_ms": card_only, "card_face_ms": card_face}), encoding="utf-8"
        )
    return {
        "card_to_unlock_ms_p50": _pct(card_only, 0.5),
        "card_to_unlock_ms_p95": _pct(card_only, 0.95),
        "card_face_to_unlock_ms_p50": _pct(card_face, 0.5),
        "card_face_to_unlock_ms_p95": _pct(card_face, 0.95),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="presentations of each kind")
    parser.add_argument(
        "--samples-out",
        type=Path,
        metavar="FILE",
        help="also write the card-only and card+face latencies (ms) to FILE as JSON",
    )
    parser.add_argument(
        "--decide-only", action="store_true", help="only the decision with 10,000 grants"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lockgw-bench-") as tmp:
        figures = bench_decide(Path(tmp))
    if args.decide_only:
        print(json.dumps(figures))
        return
    figures.update(bench_site(args.rounds, args.samples_out))
    ordered = {
        "decide_ms_p99_10k_grants": figures.pop("decide_ms_p99_10k_grants"),
        "card_to_unlock_ms_p95": figures.pop("card_to_unlock_ms_p95"),
        "card_face_to_unlock_ms_p95": figures.pop("card_face_to_unlock_ms_p95"),
        **figures,
    }
    print(json.dumps(ordered))


if __name__ == "__main__":
    main()

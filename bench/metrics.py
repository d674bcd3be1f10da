"""Metrics figures: what a scrape costs on a loaded gateway, and what the door path pays.

Prints one JSON line last:
{"scrape_ms_p50": …, "scrape_ms_p99": …, "scrape_store_ms_p99": …, "observe_outcome_us_p99": …, …}
Takes about 3 minutes (loading the grants); ``--grants 500`` for a quick run.

- scrape: ``generate_latest`` of a real gateway (16 locks on one bus, 10,000 grants put
  through the real command path, their 10,000 acks waiting in the outbox).
- scrape_store: the part of a scrape that holds the store's lock (outbox stats, grant
  counts, clock), i.e. how long a scrape can hold up a door's record commit.
- observe_outcome: the only work metrics add to the door path (the outcome hook).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import repo_path  # noqa: F401  (first: puts the checkout on sys.path)
from joserfc.jwk import OKPKey
from prometheus_client import generate_latest

from agent.config.schema import load_config
from agent.contract.keys import create_gateway_keys, load_gateway_keys, new_key, public_set
from agent.contract.messages import make_envelope
from agent.contract.seal import seal
from agent.door.doors import VisitOutcome
from agent.runtime.gateway import build_gateway
from agent.runtime.metrics import Metrics
from agent.state.store import Store
from firmware_sim.idcards import make_id_number

LOCKS = 16


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def _config(workdir: Path) -> Path:
    keys = workdir / "keys"
    keys.mkdir()
    create_gateway_keys(keys / "gateway.jwks")
    sig, enc = new_key("Ed25519"), new_key("X25519")
    platform = {"keys": [sig.as_dict(private=True), enc.as_dict(private=True)]}
    (keys / "platform.private.jwks").write_text(json.dumps(platform), encoding="utf-8")
    (keys / "platform.jwks").write_text(json.dumps(public_set(platform)), encoding="utf-8")
    doors = "".join(
        f'\n[[doors]]\nid = "L{i}"\nbus = "bus0"\naddress = {i}\n' for i in range(1, LOCKS + 1)
    )
    path = workdir / "gateway.toml"
    path.write_text(
        f'[gateway]\nid = "bench-gw"\nstate_dir = "{workdir / "state"}"\n'
        f'control_socket = "{workdir / "control.sock"}"\n'
        '[link]\ntransport = "tcp"\nhost = "127.0.0.1"\nport = 1883\n'
        f'[keys]\ngateway_keys = "{keys / "gateway.jwks"}"\n'
        f'platform_keys = "{keys / "platform.jwks"}"\n'
        f'[[buses]]\nname = "bus0"\nport = "{workdir / "no-bus"}"\nsecure_channel = false\n'
        + doors,
        encoding="utf-8",
    )
    return path


def run(grants: int, scrapes: int, observations: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="lockgw-bench-metrics-") as tmp:
        workdir = Path(tmp)
        config = load_config(_config(workdir))
        config.gateway.state_dir.mkdir()
        store = Store.open(config.db_path)
        loop = asyncio.new_event_loop()
        gw = build_gateway(config, store, loop)
        platform = json.loads((workdir / "keys" / "platform.private.jwks").read_text())
        sig = OKPKey.import_key(platform["keys"][0])
        gw_keys = load_gateway_keys(config.keys.gateway_keys)
        gw_enc = OKPKey.import_key(
            next(k for k in gw_keys.public_set["keys"] if k["crv"] == "X25519")
        )
        now = dt.datetime.now(dt.UTC)
        for i in range(grants):
            number = make_id_number(
                dt.date(1960 + i % 40, 1 + i % 12, 1 + i % 28), f"{110101 + i // 100}", i % 100, 1
            )
            body = {
                "grant_id": f"G{i:05d}",
                "room": f"{100 + i % 400}",
                "locks": [f"L{1 + i % LOCKS}"],
                "valid_from": (now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "valid_until": (now + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "guests": [{"guest_id": f"p{i}", "id_number": number, "name": "测试"}],
            }
            env = make_envelope(
                "grant.put", "bench-gw", body, exp=now + dt.timedelta(hours=1), now=now
            )
            outcome = gw.processor.handle(seal(env, sig, gw_enc).encode())
            assert outcome.status == "ok", outcome
        metrics = Metrics(gw)
        for i in range(200):
            metrics.observe_outcome(
                VisitOutcome(f"L{1 + i % LOCKS}", i % 3 != 0, "card", "", (), 80.0)
            )
        scrape_ms, store_ms = [], []
        size = 0
        for _ in range(scrapes):
            t0 = time.perf_counter()
            text = generate_latest(metrics.registry)
            scrape_ms.append((time.perf_counter() - t0) * 1000)
            size = len(text)
            t0 = time.perf_counter()
            gw.outbox.stats()
            gw.grants.counts(gw.clock.now())
            gw.clock.state()
            store_ms.append((time.perf_counter() - t0) * 1000)
        outcome = VisitOutcome("L1", True, "card_and_face", "", (1, 2), 420.0)
        observe_us = []
        for _ in range(observations):
            t0 = time.perf_counter()
            metrics.observe_outcome(outcome)
            observe_us.append((time.perf_counter() - t0) * 1e6)
        series = sum(1 for line in text.decode().splitlines() if not line.startswith("#"))
        depth = gw.outbox.stats().depth
        store.close()
        loop.close()
    return {
        "scrape_ms_p50": _pct(scrape_ms, 0.5),
        "scrape_ms_p99": _pct(scrape_ms, 0.99),
        "scrape_store_ms_p50": _pct(store_ms, 0.5),
        "scrape_store_ms_p99": _pct(store_ms, 0.99),
        "observe_outcome_us_p50": _pct(observe_us, 0.5),
        "observe_outcome_us_p99": _pct(observe_us, 0.99),
        "scrape_bytes": size,
        "series": series,
        "grants": grants,
        "outbox_depth": depth,
        "locks": LOCKS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grants", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--observations", type=int, default=20_000)
    args = parser.parse_args()
    figures = run(args.grants, args.scrapes, args.observations)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()

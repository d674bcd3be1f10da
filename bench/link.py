"""Benchmark of the platform link: sealing rate, backlog drain, online latency.

    .venv/bin/python bench/link.py [--backlog 100000] [--latency-events 500] [--samples-out F]

- ``seal_per_s``: ``door.opened`` envelopes signed and encrypted per second, one
  thread (one core), no I/O.
- ``drain_events_per_s``: a backlog of sealed events in the outbox drained to the
  platform simulator (a separate process, jwcrypto) through a private Mosquitto
  on loopback, counted until every event is covered by the simulator's
  ``sync.ack`` and gone from the outbox.
- ``latency_p50_ms`` / ``latency_p99_ms``: online, from just before
  ``Outbox.enqueue`` (sealing and the fsync'd commit included) to the moment the
  simulator has opened, verified and stored the event; events at 50 per second.

Prints progress on stderr and ONE JSON line of figures last on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import repo_path  # noqa: F401  (first: puts the checkout on sys.path)

from agent.contract.keys import create_gateway_keys, load_gateway_keys, load_platform_keys
from agent.contract.messages import format_time, make_envelope, utc_now
from agent.contract.seal import seal
from agent.grants.store import GrantStore
from agent.state.secretbox import SecretBox
from agent.state.store import Store
from agent.sync.applier import GatewayApplier
from agent.sync.commands import CommandProcessor
from agent.sync.link import Link, LinkSettings
from agent.sync.outbox import Outbox
from firmware_sim.broker import MosquittoBroker
from firmware_sim.polling import wait_until

REPO = Path(__file__).resolve().parents[1]

GW = "bench-gw"


def note(text: str) -> None:
    print(f"[bench/link] {text}", file=sys.stderr, flush=True)


def event(n: int) -> dict[str, object]:
    return {
        "lock": "door-101",
        "method": ["card", "face"],
        "grant_id": "g-20260101-101",
        "n": n,
        "at": format_time(utc_now()),
    }


def bench_seal(keys_dir: Path, count: int) -> float:
    gw_keys = load_gateway_keys(keys_dir / "gateway.jwks")
    pf_keys = load_platform_keys(keys_dir / "platform.jwks")
    envelopes = [make_envelope("door.opened", GW, event(n), seq=n + 1) for n in range(count)]
    started = time.perf_counter()
    for env in envelopes:
        seal(env, gw_keys.signing, pf_keys.encryption)
    return count / (time.perf_counter() - started)


class SimProcess:
    """The platform simulator in its own process; arrival lines read by a thread."""

    def __init__(self, port: int, keys_dir: Path, workers: int) -> None:
        self.arrivals: dict[int, float] = {}
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "firmware_sim.platform",
                "--port",
                str(port),
                "--gw",
                GW,
                "--gateway-jwks",
                str(keys_dir / "gateway.jwks.pub"),
                "--write-platform-jwks",
                str(keys_dir / "platform.jwks"),
                "--wait-jwks",
                "30",
                "--workers",
                str(workers),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.arrivals[int(doc["seq"])] = float(doc["t"])

    def arrived(self, seq: int) -> float | None:
        with self._lock:
            return self.arrivals.get(seq)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--latency-events", type=int, default=500)
    parser.add_argument("--seal-count", type=int, default=3000)
    parser.add_argument(
        "--sim-workers", type=int, default=2, help="simulator processes that open messages"
    )
    parser.add_argument(
        "--samples-out",
        type=Path,
        metavar="FILE",
        help="also write the drain's (seconds, events not yet acked) points to FILE as JSON",
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-link-"))
    keys_dir = tmp / "keys"
    keys_dir.mkdir()
    jwk_set = create_gateway_keys(keys_dir / "gateway.jwks")
    broker = MosquittoBroker(tmp / "broker")
    broker.start()
    sim = SimProcess(broker.port, keys_dir, args.sim_workers)
    public = {"keys": [{k: v for k, v in key.items() if k != "d"} for key in jwk_set["keys"]]}
    (keys_dir / "gateway.jwks.pub").write_text(json.dumps(public))
    store: Store | None = None
    link: Link | None = None
    try:
        if not wait_until(lambda: (keys_dir / "platform.jwks").exists(), 30):
            raise RuntimeError("simulator did not write its keys")

        note(f"sealing {args.seal_count} events on one core")
        seal_rate = bench_seal(keys_dir, args.seal_count)
        note(f"seal_per_s={seal_rate:.0f}")

        store = Store.open(tmp / "state" / "lockgw.db")
        gw_keys = load_gateway_keys(keys_dir / "gateway.jwks")
        pf_keys = load_platform_keys(keys_dir / "platform.jwks")
        outbox = Outbox(store, GW, gw_keys, pf_keys, max_bytes=2 * 1024**3)
        note(f"filling a backlog of {args.backlog} sealed events")
        started = time.perf_counter()
        for start in range(0, args.backlog, 1000):
            stop = min(start + 1000, args.backlog)
            outbox.enqueue_many([("door.opened", event(n)) for n in range(start, stop)])
        note(f"backlog ready in {time.perf_counter() - started:.1f}s: {outbox.stats()}")

        box = SecretBox.load_or_create(tmp / "state" / "local.key")
        # No locks here: the benchmark's platform sends only sync.ack.
        applier = GatewayApplier(GrantStore(store, box, pf_keys), set(), unlock=lambda *_: None)
        processor = CommandProcessor(store, outbox, GW, gw_keys, pf_keys, applier)
        settings = LinkSettings(
            port=broker.port,
            transport="tcp",
            inflight_window=64,
            retry_after_s=30.0,
            reconnect_min_s=0.2,
            reconnect_max_s=2.0,
        )
        link = Link(settings, GW, outbox, processor.handle, version="bench")
        started = time.perf_counter()
        link.start()
        backlog_last = outbox.stats().last_seq
        points: list[tuple[float, int]] = []

        def drained() -> bool:
            left = max(0, backlog_last - outbox.acked_through)
            points.append((round(time.perf_counter() - started, 3), left))
            return left == 0

        if not wait_until(drained, 600, interval=0.1):
            raise RuntimeError(f"backlog not drained: {outbox.stats()}")
        drain_s = time.perf_counter() - started
        if args.samples_out is not None:
            args.samples_out.write_text(
                json.dumps({"backlog": args.backlog, "points": points}), encoding="utf-8"
            )
        drain_rate = args.backlog / drain_s
        note(f"drained {args.backlog} in {drain_s:.1f}s: {drain_rate:.0f}/s; {link.counters}")

        note(f"latency: {args.latency_events} events at 50/s")
        sent: dict[int, float] = {}
        for n in range(args.latency_events):
            t0 = time.time()
            seq = outbox.enqueue("door.opened", event(n))
            assert seq is not None
            sent[seq] = t0
            time.sleep(0.02)
        if not wait_until(lambda: all(sim.arrived(s) for s in sent), 60):
            raise RuntimeError("latency events did not all arrive")
        latencies = sorted((sim.arrived(s) or 0.0) - t0 for s, t0 in sent.items())
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
        note(f"latency p50={p50:.1f}ms p99={p99:.1f}ms max={latencies[-1] * 1000:.1f}ms")
    finally:
        if link is not None:
            link.stop(5)
        sim.stop()
        broker.kill9()
        if store is not None:
            store.close()
    print(
        json.dumps(
            {
                "seal_per_s": round(seal_rate),
                "drain_events_per_s": round(drain_rate),
                "latency_p50_ms": round(p50, 1),
                "latency_p99_ms": round(p99, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

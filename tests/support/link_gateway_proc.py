"""A minimal gateway process for the kill -9 tests: Store + Outbox + Link + commands.

Commands go to the real applier (GrantStore + GatewayApplier) with no locks, so
any ``lock.unlock`` is refused.

It produces ``--total`` ``door.opened`` events numbered ``n`` = 0, 1, …; the
number produced so far is kept in ``meta`` in the same transaction as the
events, so a process killed at any moment resumes exactly where the committed
state says. It exits by itself once everything produced is covered by
``sync.ack`` (or runs until killed).

    python tests/support/link_gateway_proc.py --state DIR --keys DIR --port N --gw ID --total N
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.contract.keys import load_gateway_keys, load_platform_keys
from agent.contract.messages import format_time, utc_now
from agent.grants.store import GrantStore
from agent.runtime.logs import configure_logging
from agent.state.secretbox import SecretBox
from agent.state.store import Store
from agent.sync.applier import GatewayApplier
from agent.sync.commands import CommandProcessor
from agent.sync.link import Link, LinkSettings
from agent.sync.outbox import Outbox

PRODUCED = "test.produced"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--keys", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gw", required=True)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.01)
    args = parser.parse_args()
    configure_logging("warning")
    log = logging.getLogger("tests.support.link_gateway_proc")

    store = Store.open(args.state / "lockgw.db")
    gw_keys = load_gateway_keys(args.keys / "gateway.jwks")
    pf_keys = load_platform_keys(args.keys / "platform.jwks")
    outbox = Outbox(store, args.gw, gw_keys, pf_keys)
    box = SecretBox.load_or_create(args.state / "local.key")
    applier = GatewayApplier(GrantStore(store, box, pf_keys), set(), unlock=lambda *_: None)
    processor = CommandProcessor(store, outbox, args.gw, gw_keys, pf_keys, applier)
    settings = LinkSettings(
        port=args.port,
        transport="tcp",
        retry_after_s=3.0,
        reconnect_min_s=0.2,
        reconnect_max_s=1.0,
        health_interval_s=5.0,
    )
    link = Link(settings, args.gw, outbox, processor.handle, version="test")
    link.start()

    with store.read() as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (PRODUCED,)).fetchone()
    produced = int(row[0]) if row else 0
    while produced < args.total:
        batch = range(produced, min(produced + args.batch, args.total))
        with store.write() as conn:
            for n in batch:
                outbox.enqueue_in(
                    conn,
                    "door.opened",
                    {
                        "lock": "door-1",
                        "method": ["id_card"],
                        "grant_id": f"g-{n}",
                        "at": format_time(utc_now()),
                    },
                )
            produced = batch[-1] + 1
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (PRODUCED, str(produced))
            )
        outbox.notify()
        time.sleep(args.pause)
    while outbox.stats().depth > 0:
        time.sleep(0.1)
    log.warning("all events covered by sync.ack")
    link.stop(5)
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``lockgw outbox salvage FILE``: records of a moved-aside database back into the outbox."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_config_argument,
    load_config_or_fail,
    print_json,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``outbox salvage``."""
    outbox = subparsers.add_parser("outbox", help="the outbox of records for the platform")
    sub = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "salvage",
        help="send the unacknowledged records of a moved-aside database (lockgw.db.corrupt-*)"
        " with their original seq, then declare the rest lost",
    )
    add_config_argument(p)
    p.add_argument("file", type=Path, metavar="FILE", help="the moved-aside database")
    p.add_argument(
        "--no-declare",
        action="store_true",
        help="only restore; leave the missing ranges pending (declared after the grace time)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_salvage)


def _cmd_salvage(args: argparse.Namespace) -> int:
    from agent.contract.keys import load_gateway_keys, load_platform_keys
    from agent.state.store import DB_FILENAME, Store
    from agent.sync.outbox import Outbox
    from agent.sync.salvage import SalvageError, salvage

    config = load_config_or_fail(args.config)
    lost = args.file.resolve()
    live = (config.gateway.state_dir / DB_FILENAME).resolve()
    if lost == live:
        print(f"lockgw: {lost} is the live database; give the moved-aside file", file=sys.stderr)
        return EXIT_FAILURE
    store = Store.open(live)
    try:
        outbox = Outbox(
            store,
            config.gateway.id,
            load_gateway_keys(config.keys.gateway_keys),
            load_platform_keys(config.keys.platform_keys),
            max_bytes=config.outbox.max_bytes,
            warn_ratio=config.outbox.warn_ratio,
        )
        pending = outbox.pending_gaps()
        if not pending:
            print(
                "lockgw: no seq range is waiting for a salvage (nothing was lost, or it was"
                " already declared)",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        try:
            report = salvage(outbox, lost, declare=not args.no_declare)
        except SalvageError as exc:
            print(f"lockgw: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    finally:
        store.close()
    if args.json:
        print_json({"pending_before": pending, **report.__dict__})
        return EXIT_OK
    print(
        f"read {args.file.name} with {report.method}: {report.found} record(s),"
        f" {report.unreadable} unreadable; it was acknowledged through seq"
        f" {report.old_acked_through} of {report.old_last_seq}\n"
        f"restored {report.restored} unacknowledged record(s) with their original seq;"
        f" declared {report.declared} seq value(s) lost (outbox.dropped, database_lost)\n"
        "a running daemon sends them at its next republish round; a restart sends them at once"
    )
    return EXIT_OK

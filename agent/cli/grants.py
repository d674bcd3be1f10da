"""``lockgw grants list``: the grants the gateway holds, verified, personal data masked."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from agent.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_config_argument,
    load_config_or_fail,
    print_json,
)
from agent.runtime.control import ControlError, call


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``grants list``."""
    grants = subparsers.add_parser("grants", help="check-in grants held offline")
    sub = grants.add_subparsers(dest="grants_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="every grant, verified, names and ID numbers masked")
    add_config_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    config = load_config_or_fail(args.config)
    try:
        listing = call(config.gateway.control_socket, "grants", timeout=60)
    except ControlError as exc:
        # Grants are sealed with the daemon's local key and verified by it: ask the daemon.
        print(f"lockgw: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print_json(listing)
        return EXIT_OK
    table = Table(title=f"{len(listing)} grant(s)", title_justify="left")
    for column in (
        "grant",
        "room",
        "locks",
        "state",
        "valid until",
        "guests (masked)",
        "face",
        "in",
    ):
        table.add_column(column)
    for grant in listing:
        if not grant["verified"]:
            table.add_row(
                grant["grant_id"], "", "", "[red]FAILS VERIFICATION[/red]", "", "", "", ""
            )
            continue
        guests = grant["guests"]
        table.add_row(
            grant["grant_id"],
            grant["room"],
            ",".join(grant["locks"]),
            grant["state"],
            grant["valid_until"],
            "\n".join(f"{g['name']} {g['id_number']}" for g in guests),
            "\n".join(g["face"] for g in guests),
            "\n".join("yes" if g["checked_in"] else "no" for g in guests),
        )
    Console(highlight=False).print(table)
    return EXIT_OK

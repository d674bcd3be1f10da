"""``lockgw status``: one screen of the gateway's state, live from the daemon when it runs."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UserError,
    add_config_argument,
    load_config_or_fail,
    print_json,
)
from agent.doctor.disk import check_disk
from agent.doctor.report import OK
from agent.runtime.control import ControlError, DaemonRefused, call


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``status``."""
    p = subparsers.add_parser(
        "status", help="one screen: daemon, link, outbox, locks, readers, grants"
    )
    add_config_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_status)


def _cmd_status(args: argparse.Namespace) -> int:
    from agent.state.store import read_summary

    config = load_config_or_fail(args.config)
    try:
        live = call(config.gateway.control_socket, "status", timeout=10)
    except ControlError as exc:
        live = None
        reason = str(exc)
        running = isinstance(exc, DaemonRefused)
    if live is not None:
        if args.json:
            print_json(live)
        else:
            _render(live)
        return EXIT_OK
    try:
        summary = read_summary(config.db_path)
    except FileNotFoundError:
        raise UserError(
            f"{reason}; and no database at {config.db_path}: the daemon has not run "
            "with this configuration"
        ) from None
    except sqlite3.DatabaseError as exc:
        print(f"lockgw: database {config.db_path} is unreadable: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    # A daemon that answered with an error is running (a full disk can make its status
    # fail); say so, and what the disk says, rather than "not running".
    state = "running, status failed" if running else "not running"
    disk = check_disk(config, None)
    doc = {
        "gateway": config.gateway.id,
        "daemon": {"state": state, "reason": reason},
        "disk": {"ok": disk.status == OK, "detail": disk.detail},
        "schema_version": summary.schema_version,
        "tables": summary.tables,
    }
    if args.json:
        print_json(doc)
        return EXIT_OK
    print(f"gateway       {config.gateway.id}")
    print(f"daemon        {state} ({reason})")
    print(f"disk          {disk.detail}")
    print(f"database      {config.db_path}")
    print(f"schema        version {summary.schema_version}")
    for table, count in summary.tables.items():
        print(f"  {table:<22} {count} row(s)")
    return EXIT_OK


def _age(ts: float | None) -> str:
    if ts is None:
        return "never"
    seconds = max(0.0, time.time() - ts)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _render(s: dict[str, Any]) -> None:
    console = Console(highlight=False)
    link, outbox, clock, grants = s["link"], s["outbox"], s["clock"], s["grants"]
    up = "[green]connected[/green]" if link["connected"] else "[red]down[/red]"
    console.print(
        f"[bold]gateway {s['gateway']}[/bold]  lockgw {s['version']}  "
        f"daemon running {s['uptime_s']:.0f} s"
    )
    console.print(
        f"platform link  {up}  last sync {link.get('last_sync') or 'never'}  "
        f"reconnects {link.get('connects', 0)}"
    )
    oldest = outbox.get("oldest_age_s")
    console.print(
        f"outbox         {outbox['depth']} waiting ({outbox['bytes']} bytes), oldest "
        f"{'-' if oldest is None else f'{oldest:.0f} s'}, seq {outbox['last_seq']} "
        f"acked through {outbox['acked_through']}"
    )
    console.print(
        f"grants         {grants['active']} active of {grants['stored']} stored, "
        f"{grants['templates_ready']}/{grants['guests']} face templates ready"
    )
    clock_text = _clock_text(clock)
    console.print(f"clock          {clock_text}, platform last heard {_age(clock['last_contact'])}")
    disk = s["disk"]
    free, total = disk["free_bytes"] / 2**30, disk["total_bytes"] / 2**30
    full = " [red]DISK FULL: refusals only, doors stay locked[/red]" if disk.get("full") else ""
    console.print(f"disk           {free:.1f} GiB free of {total:.1f}{full}")
    face = s.get("face")
    if face is not None:
        state = "ready" if face["ready"] else "loading"
        console.print(f"face worker    {state}, {face.get('timeouts', 0)} timeouts")
    table = Table(title="locks", title_justify="left")
    for column in ("bus", "address", "online", "secure channel", "door", "tamper"):
        table.add_column(column)
    for bus, locks in s["locks"].items():
        for lock in locks:
            table.add_row(
                bus,
                str(lock["address"]),
                "yes" if lock["online"] else "[red]no[/red]",
                "yes"
                if lock["secure_channel"]
                else ("[red]wrong key[/red]" if lock["key_mismatch"] else "no"),
                lock["door"],
                "[red]yes[/red]" if lock["tamper"] else "no",
            )
    console.print(table)
    readers = Table(title="ID readers", title_justify="left")
    for column in ("door", "state", "SAM id"):
        readers.add_column(column)
    for door, reader in s["readers"].items():
        readers.add_row(door, reader["state"], reader.get("sam_id") or "-")
    console.print(readers)


_CLOCK_MODES = {
    "ok": "[green]ok[/green] (monotonic, confirmed by the platform)",
    "never_synced": "[red]never confirmed by the platform[/red]",
    "restarted": "[yellow]resumed after a power cycle, awaiting the platform's time[/yellow]",
    "wall_behind": "[red]system clock {behind:.0f} s behind; trusted time keeps running[/red]",
    "wall_ahead": "[red]system clock {ahead:.0f} s ahead; not believed[/red]",
}


def _clock_text(clock: dict[str, Any]) -> str:
    """What the clock is doing, in one phrase (``mode`` from the daemon's clock guard)."""
    behind, ahead = float(clock.get("system_behind_s", 0)), float(clock.get("system_ahead_s", 0))
    mode = str(clock.get("mode") or ("wall_behind" if behind >= 120 else "ok"))
    return _CLOCK_MODES.get(mode, mode).format(behind=behind, ahead=ahead)

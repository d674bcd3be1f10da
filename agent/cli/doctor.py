"""``lockgw doctor``: every check with OK/FAIL/SKIP and the fix (see docs/doctor.md).

Exit codes: 0 every check OK (or skipped), 1 a check failed, 2 the
configuration is unusable (or bad arguments).
"""

from __future__ import annotations

import argparse
import re
import sys

from agent.cli.common import add_config_argument, print_json
from agent.doctor import (
    DEFAULT_CONTACT_MAX_AGE_S,
    FAIL,
    OK,
    WARN,
    Check,
    DoctorOptions,
    Report,
    run_doctor,
    summary_line,
)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$", re.IGNORECASE)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``doctor``."""
    p = subparsers.add_parser(
        "doctor", help="check configuration, keys, devices, broker, platform, clock and disk"
    )
    add_config_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--min-free",
        type=parse_size,
        default=None,
        metavar="BYTES",
        help="free disk space required, e.g. 500M or 2G (default: 1 GiB or 5%% of the disk, "
        "whichever is less)",
    )
    p.add_argument(
        "--contact-max-age",
        type=parse_duration,
        default=DEFAULT_CONTACT_MAX_AGE_S,
        metavar="SECONDS",
        help="the platform must have been heard from within this long, e.g. 900 or 15m "
        "(default 15m)",
    )
    p.set_defaults(func=cmd_doctor)


def parse_size(text: str) -> int:
    """``500M`` -> 524288000 (K, M, G, T are powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 1073741824, 500M, 2G)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** "_kmgt".index(unit)) if unit else int(number)


def parse_duration(text: str) -> float:
    """``15m`` -> 900.0; a bare number is seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 900, 15m, 1h)")
    factor = {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2).lower()]
    return float(match.group(1)) * factor


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run the checks and print them; the exit code follows the report."""
    options = DoctorOptions(min_free_bytes=args.min_free, contact_max_age_s=args.contact_max_age)
    report = run_doctor(args.config, options)
    if args.json:
        print_json(report.as_dict())
    elif sys.stdout.isatty():
        _print_rich(report)
    else:
        _print_plain(report)
    return report.exit_code


def _plain_line(check: Check) -> str:
    line = f"{check.status:<4}  {check.name:<20}  {check.detail}"
    if check.fix and check.status in (FAIL, WARN):
        line += f"  -> fix: {check.fix}"
    return line


def _print_plain(report: Report) -> None:
    """One line per check (greppable in logs and pipes), then the summary."""
    for check in report.checks:
        print(_plain_line(check))
    print(_verdict(report))


def _verdict(report: Report) -> str:
    counts = summary_line(report.checks)
    if report.exit_code == 0:
        return f"doctor: all checks passed ({counts})"
    if report.exit_code == 2:
        return "doctor: the configuration is unusable; fix it first"
    return f"doctor: {report.counts()[FAIL]} check(s) failed ({counts})"


def _print_rich(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    style = {OK: "green", FAIL: "bold red"}
    table = Table(show_lines=False, expand=True)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("what was seen", ratio=3)
    table.add_column("fix", ratio=2)
    for check in report.checks:
        status_style = style.get(check.status, "yellow")
        table.add_row(
            f"[{status_style}]{check.status}[/]",
            Text(check.name),
            Text(check.detail),
            Text(check.fix if check.status in (FAIL, WARN) else ""),
        )
    console = Console()
    console.print(table, markup=True)
    console.print(_verdict(report), markup=False)

"""``lockgw readers test [PORT]``: wait for a card and print its fields, masked."""

from __future__ import annotations

import argparse
import sys
import threading
from datetime import date
from pathlib import Path
from typing import Any

from agent.cli.common import EXIT_FAILURE, EXIT_OK, UserError, print_json
from drivers.idcard.identity import IdentityError, check_dates, mask_id_number, mask_name
from drivers.idcard.reader import CardRead, IdCardReader, ReaderState, ReaderStatus


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``readers test``."""
    readers = subparsers.add_parser("readers", help="ID card reader tools")
    sub = readers.add_subparsers(dest="readers_command", metavar="ACTION", required=True)
    p = sub.add_parser("test", help="wait for a card on a reader and print its fields, masked")
    p.add_argument("port", nargs="?", help="serial device (default: the first door's reader_port)")
    p.add_argument("--baud", type=int, default=None, help="baud rate (default 115200)")
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for a card (default 30)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--config", type=Path, default=None, metavar="FILE", help="configuration for the port"
    )
    p.set_defaults(func=cmd_readers_test)


def _port_from_config(path: Path | None) -> tuple[str, int]:
    from agent.cli.common import load_config_or_fail
    from agent.config.schema import DEFAULT_CONFIG_PATH

    config = load_config_or_fail(path or DEFAULT_CONFIG_PATH)
    for door in config.doors:
        if door.reader_port:
            return door.reader_port, door.reader_baudrate
    raise UserError("no PORT given and no door in the configuration has a reader_port")


def cmd_readers_test(args: argparse.Namespace) -> int:
    """Wait up to ``--timeout`` for one card presentation; print what was read."""
    if args.timeout <= 0:
        raise UserError("--timeout must be positive")
    if args.port:
        port, baud = args.port, 115200
    else:
        port, baud = _port_from_config(args.config)
    if args.baud is not None:
        if args.baud <= 0:
            raise UserError("--baud must be positive")
        baud = args.baud
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_card(read: CardRead) -> None:
        result["read"] = read
        done.set()

    def on_status(status: ReaderStatus) -> None:
        if status.state is ReaderState.PORT_UNAVAILABLE:
            result["error"] = f"cannot open {port} ({status.detail})"
            done.set()
        elif status.state in (ReaderState.CONNECTED, ReaderState.RECOVERED):
            result["sam_id"] = status.sam_id
            if not args.json:
                print(f"reader {port}: SAM {status.sam_id or '?'}; present a card", flush=True)

    reader = IdCardReader(port, on_card, on_status, baud=baud, poll_interval=0.1)
    reader.start()
    try:
        done.wait(args.timeout)
    finally:
        reader.stop()
    if "error" in result:
        print(f"lockgw: {result['error']}", file=sys.stderr)
        return EXIT_FAILURE
    read: CardRead | None = result.get("read")
    if read is None:
        state = reader.state.value
        print(f"lockgw: no card read within {args.timeout:g} s (reader {state})", file=sys.stderr)
        return EXIT_FAILURE
    report = _report(read, port)
    if args.json:
        print_json(report)
    else:
        _print(report)
    return EXIT_OK


def _report(read: CardRead, port: str) -> dict[str, Any]:
    report: dict[str, Any] = {
        "port": port,
        "sam_id": read.sam_id,
        "read_ms": round(read.read_ms, 1),
        "card_type": read.layout.name.lower() if read.layout else None,
        "photo_format": read.photo_format,
        "photo_bytes": len(read.photo),
    }
    try:
        if read.problem is not None:
            raise read.problem
        assert read.identity is not None
        identity = read.identity
        check_dates(identity, date.today())
    except IdentityError as exc:
        report["check"] = exc.reason.value
        report["check_detail"] = str(exc)
        fields = read.fields
        report["fields"] = {
            "name": mask_name(fields.get("name", "") or fields.get("name_en", "")),
            "id_number": mask_id_number(fields.get("id_number", "")),
        }
        return report
    report["check"] = "ok"
    report["fields"] = identity.masked()
    return report


def _print(report: dict[str, Any]) -> None:
    print(f"card read in {report['read_ms']:.1f} ms (SAM {report['sam_id'] or '?'})")
    print(f"  {'type':<12} {report['card_type'] or 'unknown layout'}")
    for key, value in report["fields"].items():
        if key != "card_type":
            print(f"  {key:<12} {value}")
    print(f"  {'photo':<12} {report['photo_format']}, {report['photo_bytes']} bytes")
    check = report["check"]
    print(f"  {'check':<12} {check if check == 'ok' else report['check_detail']}")

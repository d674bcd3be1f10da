"""``lockgw events tail``: what the gateway recorded lately, as metadata (never personal data)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from agent.cli.common import EXIT_FAILURE, EXIT_OK, add_config_argument, load_config_or_fail
from agent.runtime.control import ControlError, call


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``events tail``."""
    events = subparsers.add_parser("events", help="recent records sent to the platform (metadata)")
    sub = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    p = sub.add_parser("tail", help="the last records; -f to follow")
    add_config_argument(p)
    p.add_argument("-n", "--lines", type=int, default=20, help="how many (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_cmd_tail)


def _line(entry: dict[str, Any]) -> str:
    parts = [f"#{entry.get('seq') or '-':<6}", f"{entry.get('at', ''):<24}", f"{entry['type']:<28}"]
    parts += [f"{k}={v}" for k, v in entry.items() if k not in ("seq", "at", "type")]
    return " ".join(parts)


def _cmd_tail(args: argparse.Namespace) -> int:
    config = load_config_or_fail(args.config)
    socket_path = config.gateway.control_socket
    after = 0
    try:
        entries = call(socket_path, "events", {"after_seq": 0, "limit": max(1, args.lines)})
        while True:
            for entry in entries:
                print(
                    json.dumps(entry, ensure_ascii=False) if args.json else _line(entry), flush=True
                )
                after = max(after, entry.get("seq") or 0)
            if not args.follow:
                return EXIT_OK
            time.sleep(1.0)
            entries = call(socket_path, "events", {"after_seq": after, "limit": 1000})
    except ControlError as exc:
        print(f"lockgw: {exc}", flush=True)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK

"""``lockgw keys init|show|rotate``: the gateway's sealing keys (JWK Set, mode 0600)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from agent.cli.common import EXIT_OK, UserError, add_config_argument, load_config_or_fail
from agent.contract.keys import (
    KeyFileError,
    create_gateway_keys,
    fingerprint,
    load_gateway_keys,
    public_set,
    read_jwk_set,
    rotate_gateway_keys,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``keys`` with its actions."""
    keys = subparsers.add_parser("keys", help="the gateway's message-sealing keys")
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    p = sub.add_parser(
        "init", help="create the gateway key set (0600); print the public set for registration"
    )
    _common(p)
    p.add_argument("--force", action="store_true", help="replace an existing key file")
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("show", help="print the public key set and its fingerprint")
    _common(p)
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser(
        "rotate", help="add new current keys; old ones keep decrypting for a grace period"
    )
    _common(p)
    p.add_argument(
        "--grace-days",
        type=float,
        default=30.0,
        help="days the old keys stay valid for decryption (default 30)",
    )
    p.set_defaults(func=_cmd_rotate)


def _common(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)
    p.add_argument(
        "--file",
        type=Path,
        metavar="PATH",
        help="key file (default: keys.gateway_keys from the configuration)",
    )
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")


def _key_file(args: argparse.Namespace) -> Path:
    if args.file is not None:
        return Path(args.file)
    return load_config_or_fail(args.config).keys.gateway_keys


def _show(jwk_set: dict[str, Any], as_json: bool) -> None:
    public = public_set(jwk_set)
    print_ = sys.stdout.write
    if as_json:
        print_(json.dumps({"jwks": public, "fingerprint": fingerprint(public)}, indent=2) + "\n")
        return
    print_(json.dumps(public, indent=2) + "\n")
    print_(f"fingerprint: {fingerprint(public)}\n")


def _cmd_init(args: argparse.Namespace) -> int:
    path = _key_file(args)
    try:
        jwk_set = create_gateway_keys(path, force=args.force)
    except (KeyFileError, OSError) as exc:
        raise UserError(str(exc)) from None
    _show(jwk_set, args.json)
    if not args.json:
        print(f"# written to {path} (mode 0600); register the set above at the platform")
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    path = _key_file(args)
    try:
        load_gateway_keys(path)
        jwk_set = read_jwk_set(path, private=True)
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    _show(jwk_set, args.json)
    return EXIT_OK


def _cmd_rotate(args: argparse.Namespace) -> int:
    path = _key_file(args)
    if args.grace_days < 0:
        raise UserError("--grace-days must not be negative")
    try:
        jwk_set = rotate_gateway_keys(path, dt.timedelta(days=args.grace_days))
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    _show(jwk_set, args.json)
    if not args.json:
        print("# register the new set at the platform; old keys retire after the grace period")
    return EXIT_OK

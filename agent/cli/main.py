"""The ``lockgw`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from agent import __version__
from agent.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    UserError,
    add_config_argument,
    load_config_or_fail,
)

# Modules that add subcommands with ``register(subparsers)``.
_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "agent.cli.status",
    "agent.cli.events",
    "agent.cli.grants",
    "agent.cli.keys",
    "agent.cli.locks",
    "agent.cli.readers",
    "agent.cli.face",
    "agent.cli.demo",
    "agent.cli.doctor",
    "agent.cli.outbox",
)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="lockgw",
        description="Gateway agent for smart-lock buildings: ID card + face check-in, "
        "offline grants, sealed sync to the platform.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run the gateway daemon (systemd runs this)")
    add_config_argument(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=_cmd_version)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = config_sub.add_parser("check", help="validate the configuration without starting")
    add_config_argument(p)
    p.set_defaults(func=_cmd_config_check)

    for module_name in _SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"lockgw: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"lockgw {__version__}")
    return EXIT_OK


def _cmd_config_check(args: argparse.Namespace) -> int:
    from agent.runtime.sizing import building_budget

    config = load_config_or_fail(args.config)
    budget = building_budget(config)
    print(
        f"{args.config}: OK (gateway {config.gateway.id}, {len(config.buses)} bus(es), "
        f"{len(config.doors)} door(s)); needs TasksMax >= {budget.tasks_max} "
        f"({budget.door_workers} door workers, {budget.device_threads} device threads)"
    )
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from agent.contract.keys import KeyFileError
    from agent.devices.lockkeys import LockKeyError
    from agent.runtime.daemon import Daemon
    from agent.runtime.logs import configure_logging
    from agent.state.store import StoreError

    config = load_config_or_fail(args.config)
    configure_logging(config.gateway.log_level)
    try:
        return Daemon(config).run()
    except (KeyFileError, LockKeyError, StoreError) as exc:
        raise UserError(f"cannot start: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())

"""``lockgw demo``: the simulated building's scripted day (see :mod:`agent.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.common import EXIT_FAILURE, EXIT_OK


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo``."""
    p = subparsers.add_parser(
        "demo", help="play a scripted day in a simulated building against a real gateway"
    )
    p.add_argument(
        "--workdir", type=Path, default=None, help="keep the building and gateway files here"
    )
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return EXIT_OK if run_demo(workdir=args.workdir) else EXIT_FAILURE

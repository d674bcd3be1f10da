"""Helpers shared by the CLI's subcommands: config loading, output, exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.config.schema import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and found a problem (a failed check, a device not answering)
EXIT_USAGE = 2  # the user asked for something impossible (bad arguments, bad configuration)


class UserError(Exception):
    """A mistake the user can fix; shown as one line on stderr, exit code 2."""


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config F`` with the default path."""
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        metavar="FILE",
        help=f"gateway configuration (default {DEFAULT_CONFIG_PATH})",
    )


def load_config_or_fail(path: Path) -> Config:
    """The configuration, or a :class:`UserError` listing every problem."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def print_json(data: Any) -> None:
    """One JSON document on stdout, for scripts."""
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")

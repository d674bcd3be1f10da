"""``lockgw demo``: the simulated building's scripted day (``firmware_sim/demo.py``).

The simulators are not part of the product: the demo runs from a source checkout,
in its own interpreter with the checkout on its path, so nothing of ``firmware_sim``
is imported by the installed agent.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import agent
from agent.cli.common import UserError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo``."""
    p = subparsers.add_parser(
        "demo", help="play a scripted day in a simulated building against a real gateway"
    )
    p.add_argument(
        "--workdir", type=Path, default=None, help="keep the building and gateway files here"
    )
    p.set_defaults(func=_cmd_demo)


def checkout_root() -> Path | None:
    """The source checkout this agent runs from, if it has the simulators beside it."""
    root = Path(agent.__file__).resolve().parents[1]
    return root if (root / "firmware_sim" / "demo.py").is_file() else None


def _cmd_demo(args: argparse.Namespace) -> int:
    root = checkout_root()
    if root is None:
        raise UserError(
            "demo: the simulated building is not installed with the product; "
            "run it from a source checkout (./scripts/setup && .venv/bin/lockgw demo)"
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "firmware_sim.demo"]
    if args.workdir is not None:
        cmd += ["--workdir", str(args.workdir)]
    try:
        return subprocess.run(cmd, cwd=root, env=env, check=False).returncode
    except KeyboardInterrupt:
        return 130

"""``lockgw demo``: start the gateway in a temporary state directory and show it working."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent.cli.common import EXIT_FAILURE, EXIT_OK


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo``."""
    p = subparsers.add_parser("demo", help="run the gateway against a simulated setup and exit")
    p.add_argument("--seconds", type=float, default=3.0, help="how long the daemon runs")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="lockgw-demo-") as tmp:
        config = Path(tmp) / "gateway.toml"
        config.write_text(
            f'[gateway]\nid = "demo-gw-01"\nstate_dir = "{tmp}/state"\n'
            f'control_socket = "{tmp}/control.sock"\n'
            '[link]\ntransport = "tcp"\nhost = "127.0.0.1"\nport = 1883\n',
            encoding="utf-8",
        )
        print(f"demo: starting the daemon with state in {tmp}/state")
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        cmd = [sys.executable, "-m", "agent.cli.main"]
        proc = subprocess.Popen([*cmd, "run", "--config", str(config)], env=env)
        time.sleep(args.seconds)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        print(f"demo: daemon exited with {code}")
        status = subprocess.run([*cmd, "status", "--config", str(config)], env=env)
        return EXIT_OK if code == 0 and status.returncode == 0 else EXIT_FAILURE

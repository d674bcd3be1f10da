"""A door process for the kill -9 tests: records openings and unlocks, over and over.

Real store, outbox, grant store, recorder and door opener; the "lock" is a
witness file: a line ``<lock id>`` is appended when the unlock really happens
(after a random 0-20 ms, like an OSDP round trip). At start the process reports
every opening recorded but never carried out (``door.unlock_failed``,
``gateway_restart``), prints ``ready``, then opens doors ``door-<pid>-<n>`` until
killed (or ``--openings`` of them). ``--die-in-unlock`` kills itself with SIGKILL
inside the first unlock: a deterministic point between record and unlock.

    python -m tests.support.unlock_proc --state DIR --keys DIR --witness FILE
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agent.contract.keys import load_gateway_keys, load_platform_keys
from agent.door.alerts import AlertPolicy, AlertRules
from agent.door.decision import Decision
from agent.door.doors import DoorDevices
from agent.door.occupancy import OccupantWatch
from agent.door.opening import DoorOpener
from agent.door.recorder import VisitRecorder
from agent.door.records import door_opened
from agent.grants.store import GrantStore
from agent.runtime.sizing import thread_budget
from agent.state.secretbox import SecretBox
from agent.state.store import Store
from agent.sync.outbox import Outbox


class WitnessLock:
    """A lock that writes down every unlock it carries out."""

    def __init__(self, witness: Path, die_in_unlock: bool) -> None:
        self._witness = witness
        self._die = die_in_unlock
        self.lock_id = ""

    def unlock(self, address: int, seconds: float) -> None:
        if self._die:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(random.uniform(0.0, 0.02))
        with self._witness.open("a", encoding="ascii") as f:
            f.write(self.lock_id + "\n")

    def feedback(self, address: int, granted: bool) -> None:
        """No LED here."""


async def run(args: argparse.Namespace) -> int:
    store = Store.open(args.state / "lockgw.db")
    outbox = Outbox(
        store,
        "bldg-doors",
        load_gateway_keys(args.keys / "gateway.jwks"),
        load_platform_keys(args.keys / "platform.jwks"),
    )
    grants = GrantStore(
        store,
        SecretBox.load_or_create(args.state / "local.key"),
        load_platform_keys(args.keys / "platform.jwks"),
    )
    rules = AlertRules(AlertPolicy())
    recorder = VisitRecorder(store, outbox, grants, rules)
    recorder.fail_interrupted(time.time())
    lock = WitnessLock(args.witness, args.die_in_unlock)
    occupants = OccupantWatch(None, rules, time.time, recorder.commit, 1.0)
    opener = DoorOpener(recorder, occupants, time.time, lambda _name: None)
    print("ready", flush=True)
    if args.doors:
        await at_once(args, opener)
        store.close()
        return 0
    n = 0
    while args.openings < 0 or n < args.openings:
        lock.lock_id = f"door-{os.getpid()}-{n}"
        door = DoorDevices(lock.lock_id, "101", "bus0", 1, 1.0, lock, None)
        body = door_opened(lock=lock.lock_id, method=["remote"], at=time.time(), remote="test")
        await opener.admit(
            door, Decision(True, "remote", ""), [("door.opened", body)], 0.0, now=time.time()
        )
        n += 1
    store.close()
    return 0


async def at_once(args: argparse.Namespace, opener: DoorOpener) -> None:
    """One opening at each of ``--doors`` doors at the same moment, on the daemon's bounded
    executor (sized by agent.runtime.sizing); waits for ``go`` on stdin first."""
    budget = thread_budget(doors=args.doors, readers=args.doors, buses=4, cameras=0)
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=budget.door_workers, thread_name_prefix="door")
    )
    print(f"budget {budget.tasks_max}", flush=True)
    sys.stdin.readline()

    async def one(n: int) -> None:
        lock = WitnessLock(args.witness, False)
        lock.lock_id = f"door-{n}"
        door = DoorDevices(lock.lock_id, "101", "bus0", 1, 1.0, lock, None)
        body = door_opened(lock=lock.lock_id, method=["remote"], at=time.time(), remote="test")
        await opener.admit(
            door, Decision(True, "remote", ""), [("door.opened", body)], 0.0, now=time.time()
        )

    await asyncio.gather(*(one(n) for n in range(args.doors)))
    print(f"threads {threading.active_count()}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--keys", type=Path, required=True)
    parser.add_argument("--witness", type=Path, required=True)
    parser.add_argument("--openings", type=int, default=-1)
    parser.add_argument("--die-in-unlock", action="store_true")
    parser.add_argument(
        "--doors", type=int, default=0, help="instead: one opening at each of N doors at once"
    )
    # Not asyncio.run: its shutdown starts a thread, which a capped cgroup may refuse.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run(parser.parse_args()))
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())

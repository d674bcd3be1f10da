"""``lockgw locks``: list the locks on a bus, pulse one open, give one a new key.

With the daemon running, ``list`` and ``test`` go through it (its control
socket): it holds the bus, and a test opening is recorded like any other
before the lock gets the command. With the daemon stopped (commissioning),
they run the OSDP bus directly. The bus, port, addresses and state directory
come from the configuration unless given as options. Keys come from the
sealed key store; a lock without a stored key is never talked to in plain
mode: it needs ``keyset``, which needs the daemon stopped.
"""

from __future__ import annotations

import argparse
import queue
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UserError,
    add_config_argument,
    load_config_or_fail,
    print_json,
)
from agent.devices.lockkeys import LockKeyError, LockKeyStore, new_scbk
from agent.runtime.control import ControlError, call
from drivers.osdp import (
    MAX_UNLOCK_S,
    CommandFailed,
    DoorStateChanged,
    LockEvent,
    LockSpec,
    LockState,
    OsdpBus,
    OsdpError,
)

DEFAULT_STATE_DIR = Path("/var/lib/lockgw")
DEFAULT_BUS = "bus0"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``locks list``, ``locks test ADDR`` and ``locks keyset ADDR``."""
    locks = subparsers.add_parser("locks", help="OSDP locks on an RS-485 bus")
    sub = locks.add_subparsers(dest="locks_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="show each lock: online, secure channel, door state")
    _bus_options(p, addresses_required=True)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("test", help="pulse a lock open and show its door contact changing")
    p.add_argument("address", type=_address, help="the lock's OSDP address")
    _bus_options(p, addresses_required=False)
    p.add_argument(
        "--seconds", type=float, default=3.0, help=f"unlock time (0.1..{MAX_UNLOCK_S}, default 3)"
    )
    p.add_argument(
        "--watch", type=float, default=10.0, help="seconds to show door changes (default 10)"
    )
    p.set_defaults(func=cmd_test)

    p = sub.add_parser(
        "keyset", help="give a lock a fresh secure-channel key (technician procedure)"
    )
    p.add_argument("address", type=_address, help="the lock's OSDP address")
    _bus_options(p, addresses_required=False)
    p.add_argument(
        "--install",
        action="store_true",
        help="the lock is in install mode (factory key): hand it a first key",
    )
    p.set_defaults(func=cmd_keyset)


def _bus_options(p: argparse.ArgumentParser, *, addresses_required: bool) -> None:
    add_config_argument(p)
    p.add_argument("--port", help="serial device of the RS-485 adapter (default: from --config)")
    p.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    p.add_argument(
        "--addresses",
        type=_address_list,
        help="lock addresses, e.g. 1-16,20 (default: the doors on the bus in --config)",
    )
    p.add_argument(
        "--bus", default=None, help=f"bus name (default: the first in --config, or {DEFAULT_BUS})"
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="state directory holding the sealed keys (default: from --config, or "
        f"{DEFAULT_STATE_DIR})",
    )
    p.add_argument(
        "--wait", type=float, default=5.0, help="seconds to wait for locks to come online"
    )


def _address(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"lock address {text!r} is not a number") from None
    if not 0 <= value <= 126:
        raise argparse.ArgumentTypeError(f"lock address {value} is outside 0..126")
    return value


def _address_list(text: str) -> list[int]:
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo_text, hi_text = part.split("-", 1)
            lo, hi = _address(lo_text), _address(hi_text)
            if lo > hi:
                raise argparse.ArgumentTypeError(f"address range {part!r} runs backwards")
            out.update(range(lo, hi + 1))
        else:
            out.add(_address(part))
    if not out:
        raise argparse.ArgumentTypeError("no lock addresses given")
    if len(out) > 64:
        raise argparse.ArgumentTypeError(f"{len(out)} addresses: at most 64 locks on one bus")
    return sorted(out)


# ------------------------------------------------------------------ helpers
def _resolve(args: argparse.Namespace) -> dict[str, Any] | None:
    """Fill bus options from the configuration; the daemon's live status if it runs."""
    config = None
    needs_config = args.port is None or args.state_dir is None
    needs_config |= args.addresses is None and args.locks_command == "list"
    if needs_config or args.config.exists():
        config = load_config_or_fail(args.config)
    live: dict[str, Any] | None = None
    if config is not None:
        bus = next((b for b in config.buses if args.bus in (None, b.name)), None)
        if bus is None:
            raise UserError(f"no bus {args.bus or ''} in {args.config}".replace("  ", " "))
        args.bus = bus.name
        args.port = args.port or bus.port
        args.baud = bus.baudrate if args.baud == 115200 else args.baud
        if args.addresses is None and args.locks_command == "list":
            args.addresses = sorted(d.address for d in config.doors if d.bus == bus.name)
        args.state_dir = args.state_dir or config.gateway.state_dir
        args.lock_ids = {d.address: d.id for d in config.doors if d.bus == bus.name}
        try:
            status = call(config.gateway.control_socket, "status", timeout=10)
            live = status if isinstance(status, dict) else None
        except ControlError:
            live = None
    args.bus = args.bus or DEFAULT_BUS
    args.state_dir = args.state_dir or DEFAULT_STATE_DIR
    if args.port is None:
        raise UserError("no --port given and no bus in the configuration")
    return live


def _live_list(args: argparse.Namespace, live: dict[str, Any]) -> int:
    rows = [
        {
            "address": lock["address"],
            "online": lock["online"],
            "secure_channel": "KEY MISMATCH"
            if lock["key_mismatch"]
            else ("active" if lock["secure_channel"] else "-"),
            "door": lock["door"],
            "tamper": lock["tamper"],
        }
        for lock in live["locks"].get(args.bus, [])
        if args.addresses is None or lock["address"] in args.addresses
    ]
    return _print_rows(args, rows)


def _live_test(args: argparse.Namespace, config_socket: Path) -> int:
    lock_id = args.lock_ids.get(args.address)
    if lock_id is None:
        raise UserError(f"no door at address {args.address} on bus {args.bus}")
    try:
        result = call(
            config_socket, "locks.test", {"lock": lock_id, "seconds": args.seconds}, timeout=40
        )
    except ControlError as exc:
        print(f"lockgw: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(
        f"lock {args.address} ({lock_id}): unlocked for {args.seconds:g} s, recorded as seq "
        f"{', '.join(str(s) for s in result['seqs'])}"
    )
    print(f"watching the door for {args.watch:g} s (open and close it now)")
    sys.stdout.flush()
    last, changes = None, 0
    deadline = time.monotonic() + args.watch
    while time.monotonic() < deadline:
        status = call(config_socket, "status", timeout=10)
        state = next(
            (
                lk["door"]
                for lk in status["locks"].get(args.bus, [])
                if lk["address"] == args.address
            ),
            None,
        )
        if state != last:
            if last is not None:
                changes += 1
            print(f"  {time.strftime('%H:%M:%S')} door {state}")
            sys.stdout.flush()
            last = state
        time.sleep(0.2)
    print(f"lock {args.address}: {changes} door change(s) seen")
    return EXIT_OK


def _open_store(args: argparse.Namespace) -> LockKeyStore:
    try:
        return LockKeyStore.open(args.state_dir)
    except OSError as exc:
        raise UserError(f"state directory {args.state_dir}: {exc.strerror}") from None


def _check_port(port: str) -> None:
    if not Path(port).exists():
        raise UserError(f"serial port {port} does not exist (adapter unplugged?)")


def _key(store: LockKeyStore, bus: str, address: int) -> bytes | None:
    try:
        return store.get(bus, address)
    except LockKeyError as exc:
        raise UserError(str(exc)) from None


class _Session:
    """A bus run for one CLI command, with its events in a queue."""

    def __init__(self, args: argparse.Namespace, specs: list[LockSpec]) -> None:
        self.events: queue.Queue[LockEvent] = queue.Queue()
        self.bus = OsdpBus(args.port, args.baud, specs, self.events.put, held_open_after_s=30.0)

    def __enter__(self) -> _Session:
        self.bus.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bus.stop()

    def state(self, address: int) -> LockState:
        return next(s for s in self.bus.snapshot() if s.address == address)

    def wait(self, ready: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return True
            time.sleep(0.05)
        return ready()


def _sc_label(state: LockState | None, has_key: bool) -> str:
    if not has_key:
        return "no key (run keyset)"
    assert state is not None
    if state.key_mismatch:
        return "KEY MISMATCH"
    return "active" if state.sc_active else "-"


# ---------------------------------------------------------------- commands
def cmd_list(args: argparse.Namespace) -> int:
    """``locks list``: one line per lock."""
    live = _resolve(args)
    if live is not None:
        return _live_list(args, live)
    _check_port(args.port)
    store = _open_store(args)
    keys = {a: _key(store, args.bus, a) for a in args.addresses}
    specs = [LockSpec(a, k) for a, k in keys.items() if k is not None]
    states: dict[int, LockState] = {}
    if specs:
        with _Session(args, specs) as session:
            session.wait(
                lambda: all(s.online or s.key_mismatch for s in session.bus.snapshot()),
                args.wait,
            )
            # Door states arrive just after a lock comes online.
            session.wait(
                lambda: all(
                    s.door_state.value != "unknown" for s in session.bus.snapshot() if s.online
                ),
                2.5,
            )
            states = {s.address: s for s in session.bus.snapshot()}
    rows = []
    for address, key in keys.items():
        st = states.get(address)
        rows.append(
            {
                "address": address,
                "online": bool(st and st.online),
                "secure_channel": _sc_label(st, key is not None),
                "door": st.door_state.value if st and st.online else "unknown",
                "tamper": bool(st and st.tamper),
            }
        )
    return _print_rows(args, rows)


def _print_rows(args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    if args.json:
        print_json({"port": args.port, "bus": args.bus, "locks": rows})
    else:
        print(f"{'ADDR':>4}  {'ONLINE':<7} {'SECURE CHANNEL':<20} {'DOOR':<10} TAMPER")
        for r in rows:
            print(
                f"{r['address']:>4}  {'yes' if r['online'] else 'no':<7} "
                f"{r['secure_channel']:<20} {r['door']:<10} {'yes' if r['tamper'] else 'no'}"
            )
    return EXIT_OK if all(r["online"] for r in rows) else EXIT_FAILURE


def cmd_test(args: argparse.Namespace) -> int:
    """``locks test ADDR``: unlock, then show the door contact changing."""
    if not 0.1 <= args.seconds <= MAX_UNLOCK_S:
        raise UserError(f"--seconds must be within 0.1..{MAX_UNLOCK_S}")
    live = _resolve(args)
    if live is not None:
        return _live_test(args, load_config_or_fail(args.config).gateway.control_socket)
    _check_port(args.port)
    key = _key(_open_store(args), args.bus, args.address)
    if key is None:
        raise UserError(
            f"lock {args.address} has no secure-channel key in {args.state_dir}; "
            f"run `lockgw locks keyset {args.address}` first"
        )
    with _Session(args, [LockSpec(args.address, key)]) as session:
        online = session.wait(
            lambda: session.state(args.address).online or session.state(args.address).key_mismatch,
            args.wait,
        )
        state = session.state(args.address)
        if not online or not state.online:
            why = "refused its key" if state.key_mismatch else f"did not answer in {args.wait} s"
            print(f"lockgw: lock {args.address} {why}", file=sys.stderr)
            return EXIT_FAILURE
        try:
            session.bus.unlock(args.address, args.seconds)
            session.bus.feedback(args.address, granted=True)
        except OsdpError as exc:
            print(f"lockgw: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"lock {args.address}: unlocked for {args.seconds:g} s")
        print(f"watching the door for {args.watch:g} s (open and close it now)")
        sys.stdout.flush()
        failed = False
        changes = 0
        deadline = time.monotonic() + args.watch
        while time.monotonic() < deadline:
            try:
                event = session.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(event, DoorStateChanged) and event.address == args.address:
                changes += 1
                stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
                print(f"  {stamp} door {event.state.value}")
                sys.stdout.flush()
            elif isinstance(event, CommandFailed) and event.address == args.address:
                failed = True
                print(f"lockgw: lock {args.address} did not carry out {event.command}")
        print(f"lock {args.address}: {changes} door change(s) seen")
    return EXIT_FAILURE if failed else EXIT_OK


def cmd_keyset(args: argparse.Namespace) -> int:
    """``locks keyset ADDR``: hand the lock a fresh key, verify it, store it sealed."""
    if _resolve(args) is not None:
        raise UserError(
            "the daemon is running and holds the bus: stop it first (systemctl stop lockgw)"
        )
    _check_port(args.port)
    store = _open_store(args)
    address, bus_name = args.address, args.bus
    try:
        candidates = [
            k
            for k in (store.get(bus_name, address), store.get_pending(bus_name, address))
            if k is not None
        ]
    except LockKeyError as exc:
        raise UserError(str(exc)) from None
    new = new_scbk()

    def record_pending() -> None:
        # Stored before the lock gets it, so a crash midway cannot lose the key.
        store.put_pending(bus_name, address, new)

    handed_over = False
    if not args.install:
        if not candidates:
            raise UserError(
                f"lock {address} has no stored key; put it in install mode and use --install"
            )
        for current in candidates:
            outcome = _rekey_over_secure_channel(args, address, current, new, record_pending)
            if outcome == "sent":
                handed_over = True
                break
        if not handed_over:
            print(
                f"lockgw: lock {address} did not open a secure channel with its stored key; "
                "if it was reset, put it in install mode and run keyset --install",
                file=sys.stderr,
            )
            return EXIT_FAILURE
    else:
        record_pending()
        spec = LockSpec(address, new, install_mode=True)
        with _Session(args, [spec]) as session:
            handed_over = session.wait(lambda: session.state(address).sc_active, args.wait)
            time.sleep(0.5)  # let libosdp finish its own restart with the new key
        if not handed_over:
            store.discard_pending(bus_name, address)
            print(
                f"lockgw: lock {address} did not accept a key; is it on the bus and in install "
                "mode?",
                file=sys.stderr,
            )
            return EXIT_FAILURE

    if not _verify(args, address, new):
        print(
            f"lockgw: lock {address} did not confirm the new key; kept it as pending, run "
            "keyset again",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    store.commit_pending(bus_name, address)
    print(f"lock {address}: new secure-channel key installed, verified and stored sealed")
    return EXIT_OK


def _rekey_over_secure_channel(
    args: argparse.Namespace,
    address: int,
    current: bytes,
    new: bytes,
    record_pending: Callable[[], None],
) -> str:
    with _Session(args, [LockSpec(address, current)]) as session:
        if not session.wait(
            lambda: session.state(address).sc_active or session.state(address).key_mismatch,
            args.wait,
        ):
            return "offline"
        if not session.state(address).sc_active:
            return "mismatch"
        record_pending()
        try:
            session.bus.set_key(address, new)
        except OsdpError:
            return "offline"
        time.sleep(1.0)  # the lock acknowledges, libosdp restarts its channel
    return "sent"


def _verify(args: argparse.Namespace, address: int, key: bytes) -> bool:
    """A fresh session that enforces the secure channel with ``key`` only."""
    with _Session(args, [LockSpec(address, key)]) as session:
        return session.wait(lambda: session.state(address).sc_active, args.wait)

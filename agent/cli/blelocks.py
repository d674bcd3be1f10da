"""``lockgw locks pair DOOR`` and ``lockgw locks ble DOOR``: BLE locks from the command line.

``pair`` runs the lock family's pairing with the lock of ``DOOR`` (put it in
pairing mode first: on a Nuki, hold the button for 5 s) and stores the
credentials sealed in the state directory; the daemon must be stopped (it
holds the controller). ``ble`` connects and prints the lock's state: locked,
door sensor, battery — and with ``--unlock S`` unlocks it for S seconds and
locks it again (a commissioning test; with the daemon running use the
platform's remote unlock, which is recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from agent.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UserError,
    add_config_argument,
    load_config_or_fail,
    print_json,
)
from agent.config.schema import Config, DoorSection
from agent.runtime.control import ControlError, call


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``pair`` and ``ble`` under ``lockgw locks``."""
    p = sub.add_parser("pair", help="pair the BLE lock of a door (lock in pairing mode)")
    p.add_argument("door", help="the door's lock id (its `lock` is ble:<family>:<address>)")
    add_config_argument(p)
    p.add_argument("--name", default="lockgw", help="the name the lock shows for this gateway")
    p.set_defaults(func=cmd_pair)

    p = sub.add_parser("ble", help="a BLE lock's state; --unlock S to test it")
    p.add_argument("door", help="the door's lock id")
    add_config_argument(p)
    p.add_argument("--unlock", type=float, default=0.0, help="unlock for S seconds, then lock")
    p.set_defaults(func=cmd_ble)


def _ble_door(config: Config, door_id: str) -> DoorSection:
    try:
        door = config.door(door_id)
    except KeyError:
        raise UserError(f"no door {door_id!r} in the configuration") from None
    if not door.is_ble:
        raise UserError(f"door {door_id!r} has no BLE lock (its lock is on bus {door.bus!r})")
    return door


def _daemon_running(config: Config) -> bool:
    try:
        call(config.gateway.control_socket, "status", timeout=3)
    except ControlError:
        return False
    return True


def cmd_pair(args: argparse.Namespace) -> int:
    """``locks pair DOOR``."""
    config = load_config_or_fail(args.config)
    door = _ble_door(config, args.door)
    if _daemon_running(config):
        raise UserError("the daemon holds the Bluetooth controller: stop it to pair a lock")
    from agent.devices.blekeys import BleKeyStore
    from drivers.ble import BleError, BleManager, ManagerSettings, parse_transport
    from drivers.ble.families import FAMILIES

    assert config.ble.transport is not None
    family = FAMILIES[door.ble_family]()

    async def pair() -> bytes:
        manager = BleManager(
            parse_transport(config.ble.transport or ""),
            ManagerSettings(connect_timeout=config.ble.connect_timeout_s),
        )
        await manager.start()
        try:
            async with manager.connect(door.ble_address, family) as link:
                return await family.pair(link, app_id=config.ble.app_id, name=args.name)
        finally:
            await manager.stop()

    try:
        credentials = asyncio.run(pair())
    except BleError as exc:
        print(f"lockgw: pairing {door.id} ({door.ble_address}) failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    BleKeyStore.open(config.gateway.state_dir).put(door.ble_family, door.ble_address, credentials)
    print(f"paired {door.id} ({door.ble_family} {door.ble_address}); credentials stored sealed")
    return EXIT_OK


def cmd_ble(args: argparse.Namespace) -> int:
    """``locks ble DOOR``."""
    config = load_config_or_fail(args.config)
    door = _ble_door(config, args.door)
    if _daemon_running(config):
        raise UserError("the daemon holds the Bluetooth controller: see `lockgw status`")
    from agent.devices.blekeys import BleKeyStore
    from drivers.ble import BleError, BleManager, LockCommand, ManagerSettings, parse_transport
    from drivers.ble.families import FAMILIES

    credentials = BleKeyStore.open(config.gateway.state_dir).get(door.ble_family, door.ble_address)
    if credentials is None:
        raise UserError(f"{door.id} is not paired: run `lockgw locks pair {door.id}`")
    family = FAMILIES[door.ble_family]()
    driver = family.driver(credentials)

    async def run() -> None:
        manager = BleManager(
            parse_transport(config.ble.transport or ""),
            ManagerSettings(connect_timeout=config.ble.connect_timeout_s),
        )
        await manager.start()
        try:
            async with manager.connect(door.ble_address, family) as link:
                status = await driver.status(link)
                _show(door, status)
                if args.unlock > 0:
                    _show(door, await driver.act(link, LockCommand.UNLOCK))
                    await asyncio.sleep(args.unlock)
                    _show(door, await driver.act(link, LockCommand.LOCK))
        finally:
            await manager.stop()

    try:
        asyncio.run(run())
    except BleError as exc:
        print(f"lockgw: {door.id} ({door.ble_address}): {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    """``locks test DOOR`` for a BLE lock: through the daemon (recorded) or directly."""
    config = load_config_or_fail(args.config)
    door = _ble_door(config, args.address)
    if not _daemon_running(config):
        args.door, args.unlock = door.id, args.seconds
        return cmd_ble(args)
    try:
        result = call(
            config.gateway.control_socket,
            "locks.test",
            {"lock": door.id, "seconds": args.seconds},
            timeout=40,
        )
    except ControlError as exc:
        print(f"lockgw: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    seqs = ", ".join(str(s) for s in result.get("seqs", []))
    print(
        f"{door.id} ({door.ble_address}): unlocked for {args.seconds:g} s, recorded as seq {seqs}"
    )
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    """``locks list --ble``: each BLE door's lock, live from the daemon or read directly."""
    config = load_config_or_fail(args.config)
    doors = [d for d in config.doors if d.is_ble]
    if not doors:
        raise UserError(f"no door with a BLE lock in {args.config}")
    rows: list[dict[str, Any]] = []
    try:
        status = call(config.gateway.control_socket, "status", timeout=5)
    except ControlError:
        status = None
    if isinstance(status, dict):
        live = {e["address"]: e for e in (status.get("locks") or {}).get("ble") or []}
        for door in doors:
            entry = live.get(door.ble_address, {})
            rows.append(_row(door, entry.get("paired", False), entry.get("online"), entry))
    else:
        rows = asyncio.run(_read_all(config, doors))
    if args.json:
        print_json({"ble": config.ble.transport, "locks": rows})
    else:
        print(f"{'DOOR':<8} {'ADDRESS':<18} {'PAIRED':<7} {'ONLINE':<7} {'DOOR':<8} BATTERY")
        for r in rows:
            battery = "-" if r["battery_percent"] is None else f"{r['battery_percent']} %"
            print(
                f"{r['door_id']:<8} {r['address']:<18} {'yes' if r['paired'] else 'no':<7} "
                f"{'yes' if r['online'] else 'no':<7} {r['door'] or '-':<8} {battery}"
                f"{' CRITICAL' if r['battery_critical'] else ''}"
            )
    return EXIT_OK if all(r["online"] and r["paired"] for r in rows) else EXIT_FAILURE


def _row(door: DoorSection, paired: bool, online: bool | None, s: dict[str, Any]) -> dict[str, Any]:
    return {
        "door_id": door.id,
        "address": door.ble_address,
        "family": door.ble_family,
        "paired": paired,
        "online": bool(online),
        "door": s.get("door"),
        "locked": s.get("locked"),
        "battery_percent": s.get("battery_percent"),
        "battery_critical": bool(s.get("battery_critical")),
    }


async def _read_all(config: Config, doors: list[DoorSection]) -> list[dict[str, Any]]:
    from agent.devices.blekeys import BleKeyStore
    from drivers.ble import BleError, BleManager, ManagerSettings, parse_transport
    from drivers.ble.families import FAMILIES

    keys = BleKeyStore.open(config.gateway.state_dir)
    manager = BleManager(
        parse_transport(config.ble.transport or ""),
        ManagerSettings(connect_timeout=config.ble.connect_timeout_s),
    )
    rows = []
    try:
        await manager.start()
    except BleError as exc:
        raise UserError(
            f"the BLE controller {config.ble.transport} does not answer: {exc}"
        ) from None
    try:
        for door in doors:
            credentials = keys.get(door.ble_family, door.ble_address)
            if credentials is None:
                rows.append(_row(door, False, None, {}))
                continue
            family = FAMILIES[door.ble_family]()
            try:
                async with manager.connect(door.ble_address, family) as link:
                    s = await family.driver(credentials).status(link)
            except BleError:
                rows.append(_row(door, True, False, {}))
                continue
            entry = {
                "door": s.door.value,
                "locked": s.locked,
                "battery_percent": s.battery_percent,
                "battery_critical": s.battery_critical,
            }
            rows.append(_row(door, True, True, entry))
    finally:
        await manager.stop()
    return rows


def _show(door: DoorSection, status: object) -> None:
    s = status
    print(
        f"{door.id} {door.ble_address}: {getattr(s, 'state', '?')}, door "
        f"{getattr(s, 'door', '?')}, battery {getattr(s, 'battery_percent', '?')} %"
        f"{' CRITICAL' if getattr(s, 'battery_critical', False) else ''}"
    )
    sys.stdout.flush()

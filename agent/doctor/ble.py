"""BLE locks: the controller, the sealed credentials, and each lock as the daemon sees it."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.config.schema import Config
from agent.doctor.report import FAIL, OK, SKIP, Check

_CONTROLLER_FIX = (
    "check the controller named by [ble] transport (USB dongle plugged in: lsusb; serial "
    "adapter present; hci-socket: the adapter is down in BlueZ: `btmgmt -i hci0 power off`); "
    "the daemon resets and reopens it by itself once it is back"
)


def check_ble(
    config: Config, status: dict[str, Any] | None, no_daemon: str | None, probe_timeout_s: float
) -> list[Check]:
    """The controller, every BLE door's credentials, and every BLE lock."""
    doors = [d for d in config.doors if d.is_ble]
    if not doors:
        return []
    checks = [_credentials(config)]
    live = (status or {}).get("ble")
    if status is not None and live is not None:
        up = bool(live.get("controller_up"))
        checks.append(
            Check(
                "ble controller",
                OK if up else FAIL,
                f"{live.get('transport')}: {'up' if up else 'down (the daemon keeps retrying)'}",
                "" if up else _CONTROLLER_FIX,
            )
        )
    else:
        checks.append(_probe_controller(config, probe_timeout_s))
    entries = ((status or {}).get("locks") or {}).get("ble") or []
    for door in doors:
        name = f"lock {door.id}"
        where = f"{door.ble_family} {door.ble_address}"
        if status is None:
            checks.append(Check(name, SKIP, str(no_daemon)))
            continue
        entry = next((e for e in entries if e.get("address") == door.ble_address), None)
        if entry is None:
            checks.append(Check(name, FAIL, f"{where}: not driven by the daemon", "restart it"))
        elif not entry.get("paired"):
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{where}: not paired",
                    f"stop the daemon, put the lock in pairing mode, run "
                    f"`lockgw locks pair {door.id}`, start the daemon",
                )
            )
        elif not entry.get("online"):
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{where}: not heard (out of range, batteries flat, or lock reset)",
                    "check the lock's batteries and the distance to the gateway's antenna; a "
                    "lock reset to factory settings must be paired again",
                )
            )
        elif entry.get("battery_critical"):
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{where}: battery critical ({entry.get('battery_percent')} %)",
                    "replace the lock's batteries now: a flat lock stops turning",
                )
            )
        else:
            checks.append(
                Check(
                    name,
                    OK,
                    f"{where}: online, door {entry.get('door')}, "
                    f"battery {entry.get('battery_percent')} %",
                )
            )
    return checks


def _credentials(config: Config) -> Check:
    from agent.devices.blekeys import BleKeyError, BleKeyStore

    store = BleKeyStore.open(config.gateway.state_dir)
    missing = []
    for door in (d for d in config.doors if d.is_ble):
        try:
            if store.get(door.ble_family, door.ble_address) is None:
                missing.append(door.id)
        except BleKeyError as exc:
            return Check("ble credentials", FAIL, str(exc), "pair the lock again")
    if missing:
        return Check(
            "ble credentials",
            FAIL,
            f"not paired: {', '.join(missing)}",
            f"run `lockgw locks pair {missing[0]}` with the lock in pairing mode",
        )
    return Check("ble credentials", OK, f"every BLE lock paired ({store.path})")


def _probe_controller(config: Config, timeout_s: float) -> Check:
    """With the daemon stopped: open the controller and reset it."""
    from drivers.ble import BleError, BleManager, ManagerSettings, parse_transport

    spec = parse_transport(config.ble.transport or "")

    async def probe() -> None:
        manager = BleManager(spec, ManagerSettings(hci_timeout=timeout_s))
        try:
            await manager.start()
        finally:
            await manager.stop()

    try:
        asyncio.run(asyncio.wait_for(probe(), timeout_s * 3))
    except (BleError, TimeoutError, OSError) as exc:
        return Check("ble controller", FAIL, f"{spec}: {exc}", _CONTROLLER_FIX)
    return Check("ble controller", OK, f"{spec}: answers (HCI reset done)")

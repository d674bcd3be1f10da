"""Locks: the sealed secure-channel keys on disk and each lock as the daemon drives it."""

from __future__ import annotations

from typing import Any

from agent.config.schema import Config, DoorSection
from agent.doctor.report import FAIL, OK, SKIP, Check


def keyset_fix(config: Config, bus_name: str, address: int) -> str:
    """How to install a new secure-channel key in the lock at ``address``."""
    bus = next(b for b in config.buses if b.name == bus_name)
    return (
        "stop the daemon (systemctl stop lockgw), put the lock in install mode (factory reset), "
        f"run `lockgw locks keyset {address} --install --port {bus.port} --bus {bus.name} "
        f"--state-dir {config.gateway.state_dir}`, start the daemon"
    )


def check_lock_keys(config: Config) -> tuple[list[Check], set[tuple[str, int]]]:
    """Each secure-channel bus: every lock on it has a key in the sealed store that opens."""
    from agent.devices.lockkeys import LockKeyError, LockKeyStore
    from agent.state.secretbox import SecretBox, SecretBoxError

    checks: list[Check] = []
    unkeyed: set[tuple[str, int]] = set()
    local = config.gateway.state_dir / "local.key"
    box: SecretBox | None = None
    box_error = ""
    if local.exists():
        try:
            box = SecretBox.load_or_create(local)  # exists: only read
        except (OSError, SecretBoxError) as exc:
            box_error = str(exc)
    else:
        box_error = f"{local} does not exist"
    for bus in config.buses:
        doors = [d for d in config.doors if d.bus == bus.name]
        if not bus.secure_channel or not doors:
            continue
        name = f"lock keys {bus.name}"
        if box is None:
            unkeyed |= {(bus.name, d.address) for d in doors}
            first = doors[0].address
            checks.append(
                Check(
                    name, FAIL, f"no local key ({box_error})", keyset_fix(config, bus.name, first)
                )
            )
            continue
        store = LockKeyStore(config.gateway.state_dir, box)
        missing: list[DoorSection] = []
        broken: list[str] = []
        for door in doors:
            try:
                if store.get(bus.name, door.address) is None:
                    missing.append(door)
            except LockKeyError as exc:
                broken.append(str(exc))
                missing.append(door)
        unkeyed |= {(bus.name, d.address) for d in missing}
        if missing:
            which = ", ".join(f"{d.id} (address {d.address})" for d in missing)
            detail = f"no usable secure-channel key for {which}"
            if broken:
                detail += f": {broken[0]}"
            checks.append(
                Check(name, FAIL, detail, keyset_fix(config, bus.name, missing[0].address))
            )
        else:
            checks.append(Check(name, OK, f"{len(doors)} lock(s) keyed in {store.path}"))
    return checks, unkeyed


def check_locks(
    config: Config,
    status: dict[str, Any] | None,
    no_daemon: str | None,
    bad_ports: set[str],
    unkeyed: set[tuple[str, int]],
) -> list[Check]:
    """Each door's lock: answering, and in secure channel (no key mismatch)."""
    checks: list[Check] = []
    buses = {b.name: b for b in config.buses}
    for door in config.doors:
        name = f"lock {door.id}"
        bus = buses[door.bus]
        where = f"{bus.name} address {door.address}"
        if bus.port in bad_ports:
            checks.append(Check(name, SKIP, f"{where}: its bus port failed (see port {bus.name})"))
            continue
        if (bus.name, door.address) in unkeyed:
            checks.append(Check(name, SKIP, f"{where}: it has no key (see lock keys {bus.name})"))
            continue
        if status is None:
            checks.append(Check(name, SKIP, str(no_daemon)))
            continue
        entries = (status.get("locks") or {}).get(bus.name) or []
        entry = next((e for e in entries if e.get("address") == door.address), None)
        if entry is None:
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{where}: not driven by the daemon",
                    "restart the daemon after fixing the configuration or keys; see its journal",
                )
            )
        elif entry.get("key_mismatch"):
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{where}: the lock refuses the gateway's secure-channel key "
                    "(wrong key: replaced or re-keyed lock)",
                    keyset_fix(config, bus.name, door.address),
                )
            )
        elif not entry.get("online"):
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{where}: not answering",
                    "check the lock's power, the RS-485 wiring (A/B, termination) and that its "
                    f"address is set to {door.address}",
                )
            )
        elif not bus.secure_channel:
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{where}: answering, but secure channel is off for {bus.name} (bench mode)",
                    f"set secure_channel = true for bus {bus.name} and key each lock "
                    "(docs/locks.md)",
                )
            )
        elif not entry.get("secure_channel"):
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{where}: answering without an active secure channel",
                    "power-cycle the lock; if it persists re-key it (docs/locks.md)",
                )
            )
        else:
            checks.append(Check(name, OK, f"{where}: online, secure channel active"))
    return checks

"""Benchmark BLE locks over Bumble virtual controllers (the real host stack, no radio).

Eight simulated Nuki locks on a virtual radio, the gateway's manager with
three connection slots (the adapter refuses a fourth):

- ``pair_ms``: one pairing exchange (key agreement, challenges, authorization
  id), on an open connection, median over the locks;
- ``connect_ms_p50``: LE connection, MTU exchange, GATT discovery and
  subscription to the indications;
- ``unlock_ms_p50/p99``: what a door waits: slot, connection, challenge,
  lock action, ACCEPTED, states, COMPLETE (the simulated motor takes 0 ms);
- ``unlock_exchange_ms_p50``: the same on an already open connection;
- ``gateway_us_per_unlock``: the gateway's own work per unlock (sealing and
  opening the six messages, CRC, decoding), without the stack or the link;
- ``burst8_ms``: eight doors asking at once through three slots, all served;
- ``acl_packets_per_connect`` / ``acl_packets_per_unlock``: ATT traffic over
  the air; on a real radio each costs up to one connection interval (see
  docs/ble.md for what that adds).

The virtual link delivers a packet on the next event-loop turn; a lock's
advertising interval (``advertising_ms``) bounds how soon a connection can
start, as on a real radio. Usage: ``.venv/bin/python bench/ble.py [--samples N]``;
one JSON line of figures last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.ble import BleManager, LockCommand, ManagerSettings
from drivers.ble.nuki import Credentials, NukiFamily, Session
from drivers.ble.nuki import codec as nuki
from firmware_sim.ble.nuki_lock import SimNukiLock
from firmware_sim.ble.radio import VirtualRadio

LOCKS = 8
SLOTS = 3
ADVERTISING_MS = 50.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def gateway_overhead_us(rounds: int = 2000) -> float:
    """Seal the gateway's two messages and open the lock's four, per unlock."""
    cred = Credentials(bytes(range(32)), 1, 42, bytes(16))
    gateway = Session(cred)
    lock_msgs: list[nuki.Message] = [
        nuki.Challenge(bytes(32)),
        nuki.Status(nuki.StatusCode.ACCEPTED),
        nuki.KeyturnerStates(2, 3, 0, (2026, 1, 1, 0, 0, 0), 0, 80, 0, 0, 1, 0, 0, 2),
        nuki.Status(nuki.StatusCode.COMPLETE),
    ]
    counter = iter(range(10**9))
    sealed = [
        [
            nuki.encode_encrypted(cred.shared_key, 1, m, next(counter).to_bytes(24, "little"))
            for m in lock_msgs
        ]
        for _ in range(rounds)
    ]
    started = time.perf_counter()
    for batch in sealed:
        gateway.seal(nuki.RequestData(nuki.Command.CHALLENGE))
        gateway.seal(nuki.LockActionRequest(1, 42, 0, bytes(32)))
        for data in batch:
            gateway.open(data)
    return (time.perf_counter() - started) / rounds * 1e6


async def measure(samples: int) -> dict[str, float | int]:
    radio = VirtualRadio(max_connections=SLOTS)
    locks = [
        SimNukiLock(
            radio,
            f"F{i}:00:00:00:00:{i + 1:02X}",
            pairing_mode=True,
            motor_s=0.0,
            advertising_ms=ADVERTISING_MS,
        )
        for i in range(LOCKS)
    ]
    for lock in locks:
        await lock.start()
    manager = BleManager(radio.open_adapter, ManagerSettings(max_connections=SLOTS))
    family = NukiFamily()
    await manager.start()
    try:
        pair_ms, creds = [], {}
        for lock in locks:
            async with manager.connect(lock.address, family) as link:
                started = time.perf_counter()
                creds[lock.address] = await family.pair(link, app_id=42, name="bench")
                pair_ms.append((time.perf_counter() - started) * 1000)
        drivers = {a: family.driver(c) for a, c in creds.items()}
        print(f"paired {LOCKS} locks", flush=True)

        adapter = radio.adapter
        assert adapter is not None
        unlock_ms, exchange_ms, connect_packets, unlock_packets = [], [], [], []
        for i in range(samples):
            lock = locks[i % LOCKS]
            command = LockCommand.UNLOCK if i % 2 == 0 else LockCommand.LOCK
            started = time.perf_counter()
            before = adapter.acl_in + adapter.acl_out
            async with manager.connect(lock.address, family) as link:
                connected = adapter.acl_in + adapter.acl_out
                begun = time.perf_counter()
                await drivers[lock.address].act(link, command)
                done = time.perf_counter()
                unlock_packets.append(adapter.acl_in + adapter.acl_out - connected)
            connect_packets.append(connected - before)
            unlock_ms.append((done - started) * 1000)
            exchange_ms.append((done - begun) * 1000)
        print(f"{samples} lock actions timed", flush=True)

        started = time.perf_counter()
        await asyncio.gather(*(_act(manager, family, drivers[x.address], x.address) for x in locks))
        burst_ms = (time.perf_counter() - started) * 1000
        return {
            "unlock_ms_p50": round(percentile(unlock_ms, 0.5), 1),
            "unlock_ms_p99": round(percentile(unlock_ms, 0.99), 1),
            "unlock_exchange_ms_p50": round(percentile(exchange_ms, 0.5), 2),
            "connect_ms_p50": round(statistics.median(manager.stats.connect_ms), 1),
            "pair_ms": round(statistics.median(pair_ms), 1),
            "gateway_us_per_unlock": round(gateway_overhead_us(), 1),
            "burst8_ms": round(burst_ms, 1),
            "acl_packets_per_connect": int(statistics.median(connect_packets)),
            "acl_packets_per_unlock": int(statistics.median(unlock_packets)),
            "advertising_ms": ADVERTISING_MS,
            "peak_connections": manager.peak_active,
            "locks": LOCKS,
            "max_connections": SLOTS,
        }
    finally:
        await manager.stop()


async def _act(manager: BleManager, family: NukiFamily, driver: object, address: str) -> None:
    async with manager.connect(address, family) as link:
        await driver.act(link, LockCommand.UNLOCK)  # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200, help="lock actions to time (200)")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.samples))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

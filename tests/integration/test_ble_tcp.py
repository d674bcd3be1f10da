"""BLE locks across processes: the lock radio runs in its own process and serves
the gateway's controller as HCI over TCP; the gateway opens it with
``tcp-client:``, the same way it opens a serial HCI dongle."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from drivers.ble import (
    AdapterDown,
    BleManager,
    LinkState,
    LockCommand,
    LockUnreachable,
    ManagerSettings,
    parse_transport,
)
from drivers.ble.nuki import NukiFamily

SETTINGS = ManagerSettings(
    max_connections=3,
    connect_timeout=0.8,
    connect_attempts=2,
    backoff_initial=0.05,
    backoff_max=0.4,
    gatt_timeout=2.0,
    hci_timeout=1.0,
)


class Radio:
    """The simulator process and its control channel."""

    def __init__(self, locks: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_sim.ble.server", "--locks", str(locks)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._read()
        self.port: int = ready["port"]
        self.locks: list[str] = ready["locks"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "simulator exited"
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def __call__(self, **request: Any) -> dict[str, Any]:
        def ask() -> dict[str, Any]:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            return self._read()

        answer = await asyncio.to_thread(ask)
        assert "error" not in answer, answer
        return answer

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def radio() -> Iterator[Radio]:
    sim = Radio(locks=4)
    try:
        yield sim
    finally:
        sim.close()


def test_pair_act_and_recover_over_tcp(radio: Radio) -> None:
    async def main() -> None:
        family = NukiFamily(answer_timeout=2.0)
        adapter: list[bool] = []
        manager = BleManager(
            parse_transport(f"tcp-client:127.0.0.1:{radio.port}"),
            SETTINGS,
            on_adapter=adapter.append,
        )
        await manager.start()
        try:
            creds = {}
            for i, address in enumerate(radio.locks):
                await radio(op="pairing", lock=i, on=True)
                async with manager.connect(address, family) as link:
                    creds[address] = await family.pair(link, app_id=42, name="gw")

            async def act(address: str, command: LockCommand) -> Any:
                driver = family.driver(creds[address])
                async with manager.connect(address, family) as link:
                    return await driver.act(link, command)

            async def status(address: str) -> Any:
                driver = family.driver(creds[address])
                async with manager.connect(address, family) as link:
                    return await driver.status(link)

            results = await asyncio.gather(*(act(a, LockCommand.UNLOCK) for a in radio.locks))
            assert all(r.locked is False for r in results)
            state = await radio(op="status")
            assert [x["actions"] for x in state["locks"]] == [[1]] * 4
            assert state["adapter_peak_connections"] <= 3

            await radio(op="door", lock=1, state="open")
            assert (await status(radio.locks[1])).door == "open"
            await radio(op="battery", lock=2, percent=10)
            assert (await status(radio.locks[2])).battery_critical

            await radio(op="range", lock=0, **{"in": False})
            with pytest.raises(LockUnreachable):
                await status(radio.locks[0])
            await radio(op="range", lock=0, **{"in": True})
            loop = asyncio.get_running_loop()
            end = loop.time() + 5
            while manager.state(radio.locks[0]) is not LinkState.IDLE:
                assert loop.time() < end, "lock did not come back"
                await asyncio.sleep(0.05)
            assert (await act(radio.locks[0], LockCommand.LOCK)).locked is True

            await radio(op="unplug")
            end = loop.time() + 5
            while manager.adapter_up:
                assert loop.time() < end
                await asyncio.sleep(0.05)
            with pytest.raises(AdapterDown):
                await status(radio.locks[3])
            await radio(op="plug")
            assert await manager.wait_up(10)
            assert (await act(radio.locks[3], LockCommand.LOCK)).locked is True
            assert adapter == [True, False, True]
        finally:
            await manager.stop()

    asyncio.run(asyncio.wait_for(main(), 90))

"""BLE locks over Bumble virtual controllers in one process: the real host stack
(HCI, L2CAP, ATT/GATT) on both sides, the driver against the independent lock
simulator."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from drivers.ble import (
    AdapterDown,
    BadMessage,
    BleManager,
    LinkLost,
    LinkState,
    LockCommand,
    LockRefused,
    LockTimeout,
    LockUnreachable,
    ManagerSettings,
    NotAuthorized,
)
from drivers.ble.nuki import NukiFamily
from drivers.ble.nuki import codec as nuki_codec
from firmware_sim.ble.nuki_lock import SimNukiLock
from firmware_sim.ble.radio import VirtualRadio

FAST = ManagerSettings(
    max_connections=3,
    connect_timeout=0.6,
    connect_attempts=2,
    backoff_initial=0.05,
    backoff_max=0.3,
    gatt_timeout=1.0,
    hci_timeout=0.5,
)


def lock_address(i: int) -> str:
    return f"F{i % 10}:00:00:00:00:{i + 1:02X}"


class Rig:
    """A virtual radio, N simulated locks, and the gateway's manager on it."""

    def __init__(self, n: int = 1, settings: ManagerSettings = FAST, **lock_kw: Any) -> None:
        self.radio = VirtualRadio(max_connections=settings.max_connections)
        self.locks = [SimNukiLock(self.radio, lock_address(i), **lock_kw) for i in range(n)]
        self.states: list[tuple[str, LinkState]] = []
        self.adapter_events: list[bool] = []
        self.manager = BleManager(
            self.radio.open_adapter,
            settings,
            on_state=lambda a, s: self.states.append((a, s)),
            on_adapter=self.adapter_events.append,
        )
        self.family = NukiFamily(answer_timeout=1.0)
        self.credentials: dict[str, bytes] = {}

    async def start(self) -> None:
        for lock in self.locks:
            await lock.start()
        await self.manager.start()

    async def pair(self, lock: SimNukiLock) -> bytes:
        lock.pairing_mode = True
        async with self.manager.connect(lock.address, self.family) as link:
            blob = await self.family.pair(link, app_id=0x10C6, name="lockgw test")
        self.credentials[lock.address] = blob
        return blob

    async def act(self, lock: SimNukiLock, command: LockCommand) -> Any:
        driver = self.family.driver(self.credentials[lock.address])
        async with self.manager.connect(lock.address, self.family) as link:
            return await driver.act(link, command)

    async def status(self, lock: SimNukiLock) -> Any:
        driver = self.family.driver(self.credentials[lock.address])
        async with self.manager.connect(lock.address, self.family) as link:
            return await driver.status(link)

    async def stop(self) -> None:
        await self.manager.stop()


def run(body: Callable[[Rig], Awaitable[None]], n: int = 1, **kw: Any) -> None:
    async def main() -> None:
        rig = Rig(n, **kw)
        await rig.start()
        try:
            await body(rig)
        finally:
            await rig.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_pair_unlock_relock() -> None:
    async def body(rig: Rig) -> None:
        lock = rig.locks[0]
        await rig.pair(lock)
        assert len(lock.authorizations) == 1 and not lock.pairing_mode
        after = await rig.act(lock, LockCommand.UNLOCK)
        assert after.locked is False and lock.relay_energised
        after = await rig.act(lock, LockCommand.LOCK)
        assert after.locked is True and not lock.relay_energised
        assert [a.action for a in lock.actions] == [1, 2]
        assert rig.manager.state(lock.address) is LinkState.IDLE

    run(body)


def test_pairing_refused_outside_pairing_mode() -> None:
    async def body(rig: Rig) -> None:
        lock = rig.locks[0]
        async with rig.manager.connect(lock.address, rig.family) as link:
            with pytest.raises(LockRefused) as err:
                await rig.family.pair(link, app_id=1, name="intruder")
        assert err.value.code == nuki_codec.ErrorCode.P_NOT_PAIRING
        assert lock.authorizations == {}

    run(body)


def test_door_sensor_and_battery_reach_the_gateway() -> None:
    async def body(rig: Rig) -> None:
        lock = rig.locks[0]
        await rig.pair(lock)
        assert (await rig.status(lock)).door == "closed"
        lock.set_door("open")
        status = await rig.status(lock)
        assert status.door == "open" and status.locked is True
        lock.set_battery(12)
        status = await rig.status(lock)
        assert status.battery_critical and status.battery_percent == 12

    run(body)


def test_state_change_is_advertised_so_the_gateway_knows_to_read() -> None:
    async def body(rig: Rig) -> None:
        adverts: list[tuple[str, bytes]] = []
        rig.manager.on_advert = lambda a, d: adverts.append((a, d))
        lock = rig.locks[0]
        await until(lambda: any(a == lock.address for a, _ in adverts))
        before = len(adverts)
        lock.set_door("open")
        await until(lambda: len(adverts) > before)

    run(body)


def test_lock_refuses_replayed_message_and_stale_challenge() -> None:
    async def body(rig: Rig) -> None:
        lock = rig.locks[0]
        await rig.pair(lock)
        driver = rig.family.driver(rig.credentials[lock.address])
        written: list[bytes] = []
        async with rig.manager.connect(lock.address, rig.family) as link:
            real_write = link.write

            async def recording(char: str, data: bytes) -> None:
                written.append(data)
                await real_write(char, data)

            link.write = recording  # type: ignore[method-assign,assignment]
            await driver.act(link, LockCommand.UNLOCK)
            assert len(lock.actions) == 1
            # An eavesdropper replays the recorded lock-action message verbatim.
            await real_write(nuki_codec.KEYTURNER_USDIO, written[-1])
            reply = await link.receive(nuki_codec.KEYTURNER_USDIO, 1.0)
        assert lock.refused["replayed nonce"] == 1
        assert len(lock.actions) == 1
        assert reply  # an (encrypted) error report, not an action

    run(body)


def test_gateway_refuses_replayed_answer_and_wrong_key() -> None:
    async def body(rig: Rig) -> None:
        lock = rig.locks[0]
        await rig.pair(lock)
        driver = rig.family.driver(rig.credentials[lock.address])

        class Replaying:
            """A link whose attacker re-sends the lock's first answer."""

            def __init__(self, link: Any) -> None:
                self.link, self.address, self.first = link, link.address, b""

            async def write(self, char: str, data: bytes) -> None:
                await self.link.write(char, data)

            async def receive(self, char: str, timeout: float) -> bytes:
                data = await self.link.receive(char, timeout)
                if not self.first:
                    self.first = data
                    return data
                return self.first

        async with rig.manager.connect(lock.address, rig.family) as link:
            await driver.status(link)
            replaying = Replaying(link)
            await driver.status(replaying)
            with pytest.raises(BadMessage, match="replayed nonce"):
                await driver.status(replaying)
        lock.wrong_key = True
        with pytest.raises(BadMessage, match="decryption failed"):
            await rig.act(lock, LockCommand.UNLOCK)

    run(body)


def test_wrong_authenticator_refused_by_both_sides() -> None:
    async def body(rig: Rig) -> None:
        lock = rig.locks[0]
        lock.pairing_mode = True
        # Gateway side: a forged Authorization-ID (bad HMAC) ends pairing.
        from drivers.ble.nuki.pairing import Pairing, PairingError

        async with rig.manager.connect(lock.address, rig.family) as link:
            pairing = Pairing(7, "gw")
            out: Any = pairing.start()
            for _ in range(3):
                await link.write(nuki_codec.PAIRING_GDIO, out)
                out = pairing.receive(await link.receive(nuki_codec.PAIRING_GDIO, 1))
            await link.write(nuki_codec.PAIRING_GDIO, out)
            genuine = await link.receive(nuki_codec.PAIRING_GDIO, 1)
            forged = bytearray(genuine[:-2])
            forged[2] ^= 0xFF  # first byte of the authenticator
            forged_msg = bytes(forged) + struct.pack("<H", nuki_codec.crc(bytes(forged)))
            with pytest.raises(PairingError, match="bad authenticator"):
                pairing.receive(forged_msg)
        # Lock side: a wrong authenticator from the gateway is refused.
        async with rig.manager.connect(lock.address, rig.family) as link:
            pairing = Pairing(7, "gw")
            await link.write(nuki_codec.PAIRING_GDIO, pairing.start())
            out = pairing.receive(await link.receive(nuki_codec.PAIRING_GDIO, 1))
            await link.write(nuki_codec.PAIRING_GDIO, out)
            pairing.receive(await link.receive(nuki_codec.PAIRING_GDIO, 1))
            bad = nuki_codec.encode_plain(nuki_codec.AuthorizationAuthenticator(bytes(32)))
            await link.write(nuki_codec.PAIRING_GDIO, bad)
            with pytest.raises(PairingError) as err:
                pairing.receive(await link.receive(nuki_codec.PAIRING_GDIO, 1))
            assert err.value.code == nuki_codec.ErrorCode.P_BAD_AUTHENTICATOR
        assert lock.refused["bad pairing authenticator"] == 1
        assert lock.authorizations == {}

    run(body)


def test_corrupted_messages_never_unlock() -> None:
    async def body(rig: Rig) -> None:
        lock = rig.locks[0]
        await rig.pair(lock)
        cred = rig.credentials[lock.address]
        from drivers.ble.nuki import Credentials, Session

        session = Session(Credentials.from_bytes(cred))
        async with rig.manager.connect(lock.address, rig.family) as link:
            await link.write(
                nuki_codec.KEYTURNER_USDIO,
                session.seal(nuki_codec.RequestData(nuki_codec.Command.CHALLENGE)),
            )
            challenge = session.open(await link.receive(nuki_codec.KEYTURNER_USDIO, 1))
            assert isinstance(challenge, nuki_codec.Challenge)
            action = session.seal(nuki_codec.LockActionRequest(1, 0x10C6, 0, challenge.nonce))
            for i in range(len(action)):  # every single-bit flip of every byte
                corrupt = bytearray(action)
                corrupt[i] ^= 0x01
                await link.write(nuki_codec.KEYTURNER_USDIO, bytes(corrupt))
        assert lock.actions == [] and lock.lock_state == 1
        assert sum(lock.refused.values()) == len(action)

    run(body)


def test_lock_that_reset_its_pairing_refuses_and_the_gateway_says_so() -> None:
    async def body(rig: Rig) -> None:
        lock = rig.locks[0]
        await rig.pair(lock)
        lock.reset_pairing()
        with pytest.raises(NotAuthorized):
            await rig.act(lock, LockCommand.UNLOCK)
        assert lock.actions == [] and lock.refused["unknown authorization"] == 1
        await rig.pair(lock)  # a technician pairs it again
        assert (await rig.act(lock, LockCommand.UNLOCK)).locked is False

    run(body)


def test_slow_lock_times_out_and_stays_locked_on_the_gateway_view() -> None:
    async def body(rig: Rig) -> None:
        lock = rig.locks[0]
        await rig.pair(lock)
        lock.slow_s = 2.0
        with pytest.raises(LockTimeout):
            await rig.act(lock, LockCommand.UNLOCK)
        lock.slow_s = 0.0
        assert (await rig.status(lock)).door == "closed"

    run(body)


def test_out_of_range_and_back() -> None:
    async def body(rig: Rig) -> None:
        lock = rig.locks[0]
        await rig.pair(lock)
        await rig.status(lock)
        await lock.go_out_of_range()
        with pytest.raises(LockUnreachable):
            await rig.status(lock)
        assert rig.manager.state(lock.address) is LinkState.OFFLINE
        await lock.come_back()
        await until(lambda: rig.manager.state(lock.address) is LinkState.IDLE)
        assert (await rig.act(lock, LockCommand.UNLOCK)).locked is False
        assert (lock.address, LinkState.OFFLINE) in rig.states

    run(body)


def test_link_drops_mid_action() -> None:
    async def body(rig: Rig) -> None:
        lock = rig.locks[0]
        await rig.pair(lock)
        lock.slow_s = 0.3
        task = asyncio.ensure_future(rig.act(lock, LockCommand.UNLOCK))
        await until(lambda: rig.manager.state(lock.address) is LinkState.CONNECTED)
        await lock.go_out_of_range()
        with pytest.raises((LinkLost, LockTimeout)):
            await task
        assert lock.actions == []

    run(body)


def test_controller_vanishes_and_returns() -> None:
    async def body(rig: Rig) -> None:
        lock = rig.locks[0]
        await rig.pair(lock)
        rig.radio.unplug()
        await until(lambda: not rig.manager.adapter_up)
        with pytest.raises(AdapterDown):
            await rig.status(lock)
        await asyncio.sleep(0.5)  # recovery keeps trying while nothing is plugged
        rig.radio.plug()
        assert await rig.manager.wait_up(5.0)
        assert (await rig.act(lock, LockCommand.UNLOCK)).locked is False
        assert rig.adapter_events == [True, False, True]
        assert rig.radio.adapters_opened >= 2

    run(body)


def test_wedged_controller_is_reset() -> None:
    async def body(rig: Rig) -> None:
        lock = rig.locks[0]
        await rig.pair(lock)
        rig.radio.wedge()
        with pytest.raises((AdapterDown, LockTimeout, LockUnreachable)):
            await rig.status(lock)
        assert await rig.manager.wait_up(5.0)
        assert (await rig.status(lock)).locked is True
        assert rig.manager.stats.counters["adapter_recovered"] >= 1

    run(body)


def test_eight_locks_three_slots_all_served() -> None:
    async def body(rig: Rig) -> None:
        for lock in rig.locks:
            await rig.pair(lock)
        results = await asyncio.gather(*(rig.act(lock, LockCommand.UNLOCK) for lock in rig.locks))
        assert all(r.locked is False for r in results)
        assert all(len(lock.actions) == 1 for lock in rig.locks)
        assert rig.manager.peak_active == 3
        adapter = rig.radio.adapter
        assert adapter is not None
        assert adapter.peak_connections <= 3 and adapter.refused_for_limit == 0

    run(body, n=8)

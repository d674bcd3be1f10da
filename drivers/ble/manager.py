"""One Bluetooth controller shared by every BLE lock: slots, connections, recovery.

:class:`BleManager` owns the Bumble host stack on one controller. It scans
continuously (so it knows which locks are in range and when a lock's
advertisement says something changed), connects on demand, discovers GATT,
subscribes to the family's indications, and hands a :class:`Link` to the lock
driver. It bounds the number of simultaneous connections (controllers have
few slots; past them they answer "connection limit exceeded" or abort), queues
the rest in arrival order, retries a failed connection with back-off, and when
the controller disappears (transport closed, USB unplugged) or wedges (an HCI
command or a connect cancel that never completes) it tears the stack down and
brings a fresh one up with back-off, resetting the controller.

Per-lock state (:class:`LinkState`) is reported through ``on_state``; the
manager never decides what a door does about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from bumble import core, hci
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.host import Host
from bumble.transport import open_transport

from .protocol import AdapterDown, LinkLost, LockFamily, LockTimeout, LockUnreachable
from .transport import TransportSpec

log = logging.getLogger(__name__)

_LOST = b""  # queue sentinel: the connection dropped


class HciTransport(Protocol):
    """What Bumble's transports offer: an HCI source and sink, and close()."""

    source: Any
    sink: Any

    async def close(self) -> None: ...


TransportOpener = Callable[[], Awaitable[HciTransport]]


class LinkState(StrEnum):
    """Where one lock stands with the gateway."""

    UNKNOWN = "unknown"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    IDLE = "idle"  # reachable, not connected now
    OFFLINE = "offline"


@dataclass(frozen=True)
class ManagerSettings:
    """Bounds and timings; the defaults suit real controllers and locks."""

    max_connections: int = 3
    connect_timeout: float = 5.0
    connect_attempts: int = 3
    backoff_initial: float = 0.25
    backoff_max: float = 8.0
    gatt_timeout: float = 5.0
    hci_timeout: float = 3.0
    mtu: int = 247
    name: str = "lockgw"
    address: str = "C0:10:C0:10:C0:10"


@dataclass
class _Lock:
    state: LinkState = LinkState.UNKNOWN
    last_seen: float | None = None
    advert: bytes = b""
    failures: int = 0


@dataclass
class Stats:
    """Counters for status and metrics."""

    counters: Counter[str] = field(default_factory=Counter)
    connect_ms: list[float] = field(default_factory=list)

    def count(self, name: str) -> None:
        self.counters[name] += 1


class Link:
    """A live GATT connection to one lock (implements the GattLink protocol)."""

    def __init__(self, address: str, connection: Connection, peer: Peer, timeout: float) -> None:
        self.address = address
        self._connection = connection
        self._peer = peer
        self._timeout = timeout
        self._chars: dict[str, Any] = {}
        self._queues: dict[str, asyncio.Queue[bytes]] = {}
        self.lost = False

    async def _setup(self, family: LockFamily, mtu: int) -> None:
        await self._peer.request_mtu(mtu)
        for service in family.services:
            await self._peer.discover_service(core.UUID(service))
        await self._peer.discover_characteristics()
        for uuid in family.indications:
            found = self._peer.get_characteristics_by_uuid(core.UUID(uuid))
            if not found:
                continue  # a lock outside pairing mode may hide its pairing service
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            self._chars[uuid] = found[0]
            self._queues[uuid] = queue
            await self._peer.subscribe(found[0], queue.put_nowait, prefer_notify=False)

    def on_disconnection(self, *_: object) -> None:
        self._on_lost()

    def _on_lost(self) -> None:
        self.lost = True
        for queue in self._queues.values():
            queue.put_nowait(_LOST)

    async def write(self, characteristic: str, data: bytes) -> None:
        if self.lost:
            raise LinkLost(self.address)
        char = self._chars.get(characteristic)
        if char is None:
            raise LockUnreachable(f"{self.address} offers no {characteristic}")
        try:
            await asyncio.wait_for(
                self._peer.write_value(char, data, with_response=True), self._timeout
            )
        except TimeoutError as exc:
            raise LockTimeout(f"write to {self.address}") from exc
        except core.BaseBumbleError as exc:
            raise LinkLost(f"{self.address}: {exc}") from exc

    async def receive(self, characteristic: str, timeout: float) -> bytes:
        queue = self._queues.get(characteristic)
        if queue is None:
            raise LockUnreachable(f"{self.address} offers no {characteristic}")
        try:
            data = await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError as exc:
            raise LockTimeout(f"{self.address} silent for {timeout:.1f} s") from exc
        if data is _LOST or (self.lost and not data):
            raise LinkLost(self.address)
        return bytes(data)


class BleManager:
    """The shared connection manager over one controller."""

    def __init__(
        self,
        transport: TransportSpec | TransportOpener,
        settings: ManagerSettings | None = None,
        *,
        on_state: Callable[[str, LinkState], None] | None = None,
        on_adapter: Callable[[bool], None] | None = None,
        on_advert: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.settings = settings or ManagerSettings()
        if isinstance(transport, TransportSpec):
            spec = transport.bumble

            async def opener() -> HciTransport:
                return await open_transport(spec)

            self._opener: TransportOpener = opener
        else:
            self._opener = transport
        self.on_state = on_state
        self.on_adapter = on_adapter
        self.on_advert = on_advert
        self._locks: dict[str, _Lock] = {}
        self._slots = asyncio.Semaphore(self.settings.max_connections)
        self._connecting = asyncio.Lock()  # a controller creates one connection at a time
        self._device: Device | None = None
        self._transport: HciTransport | None = None
        self._up = asyncio.Event()
        self._links: set[Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._recovering: asyncio.Task[None] | None = None
        self._stopped = False
        self.stats = Stats()
        self.active = 0
        self.peak_active = 0

    # ------------------------------------------------------------ adapter
    @property
    def adapter_up(self) -> bool:
        return self._up.is_set()

    async def start(self) -> None:
        """Bring the controller up; raises AdapterDown if it does not answer."""
        await self._bring_up()

    async def wait_up(self, timeout: float) -> bool:
        """Wait until the controller is up (after a recovery)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), timeout)
        return self._up.is_set()

    async def stop(self) -> None:
        """Disconnect everything and release the controller."""
        self._stopped = True
        if self._recovering:
            self._recovering.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self._tear_down()

    async def _bring_up(self) -> None:
        s = self.settings
        try:
            transport = await asyncio.wait_for(self._opener(), s.hci_timeout)
        except (OSError, TimeoutError, core.BaseBumbleError) as exc:
            raise AdapterDown(f"cannot open the controller: {exc}") from exc
        device = Device(
            name=s.name,
            address=hci.Address(s.address),
            host=Host(transport.source, transport.sink),
        )
        device.command_timeout = s.hci_timeout
        device.on(device.EVENT_ADVERTISEMENT, self._advertisement)
        try:
            await asyncio.wait_for(device.power_on(), s.hci_timeout * 2)
            await asyncio.wait_for(device.start_scanning(filter_duplicates=False), s.hci_timeout)
        except (TimeoutError, core.BaseBumbleError, hci.HCI_Error) as exc:
            with contextlib.suppress(Exception):
                await transport.close()
            raise AdapterDown(f"controller did not initialise: {exc}") from exc
        self._device, self._transport = device, transport
        terminated = getattr(transport.source, "terminated", None)
        if terminated is not None:
            self._spawn(self._watch(terminated))
        self._up.set()
        log.info("ble controller up")
        if self.on_adapter:
            self.on_adapter(True)

    async def _watch(self, terminated: asyncio.Future[None]) -> None:
        with contextlib.suppress(Exception):
            await terminated
        self.adapter_lost("transport closed")

    def adapter_lost(self, why: str) -> None:
        """The controller vanished or wedged: drop it and start recovering."""
        if self._stopped or not self._up.is_set():
            return
        log.warning("ble controller lost: %s", why)
        self.stats.count(f"adapter_lost:{why}")
        self._up.clear()
        for link in list(self._links):
            link._on_lost()
        for address, lock in self._locks.items():
            if lock.state in (LinkState.CONNECTED, LinkState.CONNECTING, LinkState.IDLE):
                self._set_state(address, LinkState.UNKNOWN)
        if self.on_adapter:
            self.on_adapter(False)
        if self._recovering is None or self._recovering.done():
            self._recovering = asyncio.get_running_loop().create_task(self._recover())

    async def _tear_down(self) -> None:
        device, transport = self._device, self._transport
        self._device = self._transport = None
        self._up.clear()
        if device is not None:
            device.remove_all_listeners()
        if transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(transport.close(), 1.0)

    async def _recover(self) -> None:
        delay = self.settings.backoff_initial
        while not self._stopped:
            await self._tear_down()
            await asyncio.sleep(delay)
            try:
                await self._bring_up()
                self.stats.count("adapter_recovered")
                return
            except AdapterDown as exc:
                log.warning("ble controller still down: %s", exc.detail)
                delay = min(delay * 2, self.settings.backoff_max)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ scanning
    def _advertisement(self, advert: Advertisement) -> None:
        address = str(advert.address).split("/")[0]
        lock = self._locks.setdefault(address, _Lock())
        lock.last_seen = time.monotonic()
        data = bytes(advert.data)
        if lock.state in (LinkState.OFFLINE, LinkState.UNKNOWN):
            lock.failures = 0
            self._set_state(address, LinkState.IDLE)
        if data != lock.advert:
            lock.advert = data
            if self.on_advert:
                self.on_advert(address, data)

    def last_seen(self, address: str) -> float | None:
        """When (monotonic) the lock last advertised, or None."""
        lock = self._locks.get(address.upper())
        return lock.last_seen if lock else None

    def state(self, address: str) -> LinkState:
        lock = self._locks.get(address.upper())
        return lock.state if lock else LinkState.UNKNOWN

    def _set_state(self, address: str, state: LinkState) -> None:
        lock = self._locks.setdefault(address, _Lock())
        if lock.state is state:
            return
        lock.state = state
        if self.on_state:
            self.on_state(address, state)

    def mark_offline(self, address: str) -> None:
        """Declare a lock offline (no advertisement for too long, as judged by the caller)."""
        self._set_state(address.upper(), LinkState.OFFLINE)

    # ------------------------------------------------------------ connections
    @asynccontextmanager
    async def connect(self, address: str, family: LockFamily) -> AsyncIterator[Link]:
        """A connection to ``address`` for the duration of the block (a slot is held)."""
        address = address.upper()
        if not self._up.is_set():
            raise AdapterDown("controller is recovering")
        async with self._slots:
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
            try:
                link = await self._open(address, family)
                self._links.add(link)
                try:
                    yield link
                finally:
                    self._links.discard(link)
                    await self._close(address, link)
            finally:
                self.active -= 1

    async def _open(self, address: str, family: LockFamily) -> Link:
        s = self.settings
        delay = s.backoff_initial
        last: Exception | None = None
        for attempt in range(s.connect_attempts):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, s.backoff_max)
            if not self._up.is_set() or self._device is None:
                raise AdapterDown("controller is recovering")
            device = self._device
            self._set_state(address, LinkState.CONNECTING)
            started = time.perf_counter()
            try:
                async with self._connecting:
                    connection = await asyncio.wait_for(
                        device.connect(hci.Address(address), timeout=s.connect_timeout),
                        s.connect_timeout + s.hci_timeout,
                    )
            except (TimeoutError, core.CommandTimeoutError) as exc:
                # An HCI command unanswered, or a timed-out connect whose cancel
                # is never answered: the controller is wedged.
                self.stats.count("connect_wedged")
                self.adapter_lost("connect cancel not answered")
                raise AdapterDown("controller wedged while connecting") from exc
            except (core.BaseBumbleError, hci.HCI_Error) as exc:
                self.stats.count("connect_failed")
                last = exc
                continue
            link = Link(address, connection, Peer(connection), s.gatt_timeout)
            connection.on(connection.EVENT_DISCONNECTION, link.on_disconnection)
            try:
                await asyncio.wait_for(link._setup(family, s.mtu), s.gatt_timeout)
            except (TimeoutError, core.BaseBumbleError) as exc:
                self.stats.count("discovery_failed")
                last = exc
                await self._drop(connection)
                continue
            self.stats.connect_ms.append((time.perf_counter() - started) * 1000)
            lock = self._locks.setdefault(address, _Lock())
            lock.failures = 0
            self._set_state(address, LinkState.CONNECTED)
            return link
        lock = self._locks.setdefault(address, _Lock())
        lock.failures += 1
        self._set_state(address, LinkState.OFFLINE)
        raise LockUnreachable(f"{address} after {s.connect_attempts} attempts: {last}")

    async def _drop(self, connection: Connection) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                connection.disconnect(hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR), 1.0
            )

    async def _close(self, address: str, link: Link) -> None:
        if not link.lost:
            await self._drop(link._connection)
        if self._up.is_set():
            self._set_state(address, LinkState.IDLE)

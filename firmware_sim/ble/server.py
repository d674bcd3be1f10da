"""The BLE radio in its own process: simulated locks, the gateway's adapter over TCP.

``python -m firmware_sim.ble.server --port P --locks N`` starts N simulated
Nuki locks on a virtual radio and serves the gateway's adapter (a virtual
controller) as HCI over TCP on 127.0.0.1:P (H4 framing, what
``tcp-client:127.0.0.1:P`` opens), like a serial HCI dongle on a wire. Each
accepted connection gets a freshly reset adapter.

Control: one JSON object per line on stdin, one JSON answer per line on stdout:
``{"op": "door", "lock": 0, "state": "open"}``, ``battery`` (``percent``),
``pairing`` (``on``), ``range`` (``in``), ``slow`` (``seconds``), ``wrong_key``
(``on``), ``reset_pairing``, ``unplug``, ``plug``, ``status``.
The first line printed is ``{"ready": true, "port": P, "locks": [...]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from bumble.transport.common import StreamPacketSink, StreamPacketSource

from .nuki_lock import SimNukiLock
from .radio import VirtualAdapter, VirtualRadio


class _HciConnection(StreamPacketSource):
    def __init__(self, server: AdapterServer) -> None:
        super().__init__()
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._server.attach(self, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.detach(self)


class AdapterServer:
    """HCI over TCP to the radio's adapter; unplug closes it, plug reopens."""

    def __init__(self, radio: VirtualRadio, port: int) -> None:
        self.radio = radio
        self.port = port
        self._server: asyncio.Server | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._source: _HciConnection | None = None

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _HciConnection(self), "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def attach(self, source: _HciConnection, transport: asyncio.BaseTransport) -> None:
        if self._transport is not None:
            transport.close()  # one host at a time, like a serial line
            return
        self.radio.close_adapter()
        adapter = VirtualAdapter(
            "gateway", self.radio.link, self.radio.adapter_address, self.radio.max_connections
        )
        sink = StreamPacketSink(transport)  # type: ignore[arg-type]
        source.set_packet_sink(adapter)
        adapter.host = sink
        self.radio.adapter = adapter
        self.radio.adapters_opened += 1
        self._transport, self._source = transport, source

    def detach(self, source: _HciConnection) -> None:
        if source is self._source:
            self.radio.close_adapter()
            self._transport = self._source = None

    async def unplug(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._transport is not None:
            self._transport.close()
        self.radio.close_adapter()

    async def plug(self) -> None:
        if self._server is None:
            await self.listen()


async def serve(port: int, n_locks: int, max_connections: int, pairing: bool) -> None:
    radio = VirtualRadio(max_connections=max_connections)
    locks = [
        SimNukiLock(radio, f"F{i % 10}:00:00:00:00:{i + 1:02X}", pairing_mode=pairing)
        for i in range(n_locks)
    ]
    for lock in locks:
        await lock.start()
    server = AdapterServer(radio, port)
    await server.listen()
    _say({"ready": True, "port": server.port, "locks": [lock.address for lock in locks]})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        try:
            request = json.loads(line)
            _say(await _control(request, locks, server, radio))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            _say({"error": f"{type(exc).__name__}: {exc}"})
    await server.unplug()


async def _control(
    req: dict[str, Any], locks: list[SimNukiLock], server: AdapterServer, radio: VirtualRadio
) -> dict[str, Any]:
    op = req["op"]
    lock = locks[int(req.get("lock", 0))]
    match op:
        case "door":
            lock.set_door(str(req["state"]))
        case "battery":
            lock.set_battery(int(req["percent"]))
        case "pairing":
            lock.pairing_mode = bool(req.get("on", True))
        case "range":
            await (lock.come_back() if req["in"] else lock.go_out_of_range())
        case "slow":
            lock.slow_s = float(req["seconds"])
        case "wrong_key":
            lock.wrong_key = bool(req.get("on", True))
        case "reset_pairing":
            lock.reset_pairing()
        case "unplug":
            await server.unplug()
        case "plug":
            await server.plug()
        case "status":
            pass
        case _:
            raise ValueError(f"unknown op {op!r}")
    adapter = radio.adapter
    return {
        "ok": op,
        "locks": [
            {
                "address": x.address,
                "lock_state": x.lock_state,
                "actions": [a.action for a in x.actions],
                "authorizations": len(x.authorizations),
                "refused": dict(x.refused),
            }
            for x in locks
        ],
        "adapter_peak_connections": adapter.peak_connections if adapter else None,
        "adapters_opened": radio.adapters_opened,
    }


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--locks", type=int, default=1)
    parser.add_argument("--max-connections", type=int, default=3)
    parser.add_argument("--pairing", action="store_true", help="locks start in pairing mode")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.locks, args.max_connections, args.pairing))


if __name__ == "__main__":
    main()

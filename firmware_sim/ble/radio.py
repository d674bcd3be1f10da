"""A virtual radio: Bumble controllers on one LocalLink, and the gateway's adapter.

Locks and the gateway each get a Bumble virtual controller (real HCI, LL
control PDUs, ACL) linked in one process. The gateway's adapter is a
:class:`VirtualAdapter`: the stock controller plus what a real one does and the
tests need: a connection-limit (past it LE Create Connection fails with
"Connection Limit Exceeded"), a proper LE Create Connection Cancel (answered
by a failed Connection Complete), and faults: unplugged (the HCI transport
closes, its links drop) and wedged (it stops answering HCI).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bumble import hci, ll
from bumble.controller import Controller
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink


class VirtualAdapter(Controller):
    """The gateway's controller on the virtual radio."""

    def __init__(
        self, name: str, link: LocalLink, address: str, max_connections: int | None = None
    ) -> None:
        super().__init__(name, link=link, public_address=address)
        self.random_address = hci.Address(address)
        self.max_connections = max_connections
        self.refused_for_limit = 0
        self.peak_connections = 0
        self.wedged = False
        self.acl_out = 0  # ACL packets host → air (to count radio exchanges)
        self.acl_in = 0  # ACL packets air → host

    def on_hci_packet(self, packet: hci.HCI_Packet) -> None:
        if self.wedged:
            return  # a wedged adapter swallows everything
        if isinstance(packet, hci.HCI_AclDataPacket):
            self.acl_out += 1
        super().on_hci_packet(packet)

    def on_link_acl_data(self, sender_address: Any, transport: Any, data: bytes) -> None:
        self.acl_in += 1
        super().on_link_acl_data(sender_address, transport, data)

    def _over_limit(self, op_code: int) -> bool:
        if self.max_connections is not None and len(self.le_connections) >= self.max_connections:
            self.refused_for_limit += 1
            self._send_hci_command_status(
                hci.HCI_ErrorCode.CONNECTION_LIMIT_EXCEEDED_ERROR, op_code
            )
            return True
        return False

    def on_hci_le_create_connection_command(self, command: Any) -> None:
        if not self._over_limit(command.op_code):
            super().on_hci_le_create_connection_command(command)

    def on_hci_le_extended_create_connection_command(self, command: Any) -> None:
        if not self._over_limit(command.op_code):
            super().on_hci_le_extended_create_connection_command(command)

    def create_le_connection(self, peer_address: hci.Address) -> None:
        super().create_le_connection(peer_address)
        self.peak_connections = max(self.peak_connections, len(self.le_connections))

    def on_hci_le_create_connection_cancel_command(self, command: Any) -> Any:
        pending = self.pending_le_connection
        self.pending_le_connection = None
        if pending is not None:
            asyncio.get_running_loop().call_soon(self._connection_cancelled, pending)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def _connection_cancelled(self, pending: Any) -> None:
        self.send_hci_packet(
            hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=pending.peer_address.address_type,
                peer_address=pending.peer_address,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            )
        )

    def drop_links(self, reason: int = hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR) -> None:
        """Every connection ends as a supervision timeout on both sides."""
        drop_links(self, reason)


def drop_links(controller: Controller, reason: int) -> None:
    """End ``controller``'s LE connections as the radio would (both ends told)."""
    for connection in list(controller.le_connections.values()):
        connection.send_ll_control_pdu(ll.TerminateInd(reason))
        controller.on_le_disconnected(connection, reason)


class _AdapterSource:
    """The controller side of an in-process HCI transport."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller
        self.terminated: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def set_packet_sink(self, sink: Any) -> None:
        self._controller.host = sink

    def close(self) -> None:
        if not self.terminated.done():
            self.terminated.set_result(None)


class AdapterTransport:
    """An HCI transport to a VirtualAdapter in this process (like Bumble's)."""

    def __init__(self, adapter: VirtualAdapter) -> None:
        self.adapter = adapter
        self.source = _AdapterSource(adapter)
        self.sink = AsyncPipeSink(adapter)

    async def close(self) -> None:
        self.source.close()


class VirtualRadio:
    """The shared air: a LocalLink, the gateway's adapter, and plug/unplug."""

    def __init__(
        self, adapter_address: str = "C0:10:C0:10:C0:10", max_connections: int | None = 3
    ) -> None:
        self.link = LocalLink()
        self.adapter_address = adapter_address
        self.max_connections = max_connections
        self.adapter: VirtualAdapter | None = None
        self._transport: AdapterTransport | None = None
        self.plugged = True
        self.adapters_opened = 0

    async def open_adapter(self) -> AdapterTransport:
        """What the gateway's transport opener calls: a fresh adapter, if plugged in."""
        if not self.plugged:
            raise OSError("no Bluetooth controller attached")
        self.close_adapter()
        self.adapter = VirtualAdapter(
            "gateway", self.link, self.adapter_address, self.max_connections
        )
        self._transport = AdapterTransport(self.adapter)
        self.adapters_opened += 1
        return self._transport

    def close_adapter(self) -> None:
        if self.adapter is not None:
            self.adapter.drop_links()
            if self.adapter in self.link.controllers:
                self.link.remove_controller(self.adapter)
            self.adapter = None

    def unplug(self) -> None:
        """The controller disappears: its links drop and its HCI transport closes."""
        self.plugged = False
        transport = self._transport
        self.close_adapter()
        if transport is not None:
            transport.source.close()

    def plug(self) -> None:
        """The controller is back; the gateway's next open finds it."""
        self.plugged = True

    def wedge(self) -> None:
        """The controller stops answering HCI (the host must notice and reset it)."""
        if self.adapter is not None:
            self.adapter.wedged = True

"""Controller transport specs: what the configuration names, checked before use.

Production: ``usb:<index or vid:pid>``, ``serial:<device>[,<baud>]`` (an HCI
UART), ``hci-socket:<index>`` (a Linux HCI socket, the kernel's own stack
kept off the adapter). Tests and the simulated building: ``tcp-client:<host>:<port>``
(a virtual controller in another process). Bumble opens them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SCHEMES = ("usb", "serial", "hci-socket", "tcp-client")
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")
_USB = re.compile(r"^(\d+|[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}(/\S+)?)$")


class TransportSpecError(ValueError):
    """A controller transport spec that cannot be used; the message says why."""


@dataclass(frozen=True)
class TransportSpec:
    """A checked transport spec; ``bumble`` is the string Bumble opens."""

    scheme: str
    target: str

    @property
    def bumble(self) -> str:
        return f"{self.scheme}:{self.target}"

    def __str__(self) -> str:
        return self.bumble


def parse_transport(spec: str) -> TransportSpec:
    """Check ``spec`` and return it parsed, or raise TransportSpecError naming the fault."""
    scheme, sep, target = spec.strip().partition(":")
    if scheme not in _SCHEMES:
        raise TransportSpecError(
            f"unknown BLE controller transport {scheme!r} in {spec!r}; "
            f"use one of {', '.join(s + ':' for s in _SCHEMES)}"
        )
    if not sep or not target:
        raise TransportSpecError(f"{spec!r}: {scheme} needs a target after the colon")
    if scheme == "usb" and not _USB.match(target):
        raise TransportSpecError(f"{spec!r}: usb takes an index (usb:0) or vid:pid")
    if scheme == "hci-socket" and not target.isdigit():
        raise TransportSpecError(f"{spec!r}: hci-socket takes an adapter index (hci-socket:0)")
    if scheme == "serial":
        device, _, baud = target.partition(",")
        if not device.startswith("/"):
            raise TransportSpecError(f"{spec!r}: serial takes a device path (serial:/dev/ttyACM0)")
        if baud and (not baud.isdigit() or int(baud) < 9600):
            raise TransportSpecError(f"{spec!r}: baud rate {baud!r} is not a number ≥ 9600")
    if scheme == "tcp-client":
        match = _HOST_PORT.match(target)
        if not match or not 0 < int(match["port"]) < 65536:
            raise TransportSpecError(f"{spec!r}: tcp-client takes host:port")
    return TransportSpec(scheme, target)

"""Controller transport specs from the configuration."""

from __future__ import annotations

import pytest

from drivers.ble import TransportSpecError, parse_transport


@pytest.mark.parametrize(
    "spec",
    ["usb:0", "usb:0a12:0001", "serial:/dev/ttyACM0,1000000", "serial:/dev/ttyUSB1",
     "hci-socket:0", "tcp-client:127.0.0.1:9001"],
)  # fmt: skip
def test_good_specs(spec: str) -> None:
    assert parse_transport(spec).bumble == spec


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("bluetooth:0", "unknown BLE controller transport"),
        ("usb", "needs a target"),
        ("usb:first", "usb takes an index"),
        ("serial:ttyACM0", "device path"),
        ("serial:/dev/ttyACM0,fast", "baud rate"),
        ("hci-socket:hci0", "adapter index"),
        ("tcp-client:localhost", "host:port"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, says: str) -> None:
    with pytest.raises(TransportSpecError, match=says):
        parse_transport(spec)

"""A door's lock named as osdp:<bus>:<address> or ble:<family>:<address>; the [ble] controller."""

from __future__ import annotations

import pytest

from agent.config.schema import ConfigError, parse_config

BASE = {"gateway": {"id": "test-gw-01"}, "link": {"transport": "tcp"}}
BUS = {"name": "bus0", "port": "/dev/ttyUSB0"}
BLE = {"transport": "usb:0"}


def config(doors: list[dict[str, object]], **sections: object) -> dict[str, object]:
    return {**BASE, "buses": [BUS], "doors": doors, **sections}


def test_osdp_lock_reference_is_bus_and_address() -> None:
    cfg = parse_config(config([{"id": "L101", "lock": "osdp:bus0:7"}]))
    door = cfg.doors[0]
    assert (door.bus, door.address, door.is_ble) == ("bus0", 7, False)


def test_ble_lock_reference() -> None:
    cfg = parse_config(config([{"id": "L103", "lock": "ble:nuki:f0:00:00:00:00:01"}], ble=BLE))
    door = cfg.doors[0]
    assert door.is_ble and door.ble_family == "nuki" and door.ble_address == "F0:00:00:00:00:01"
    assert door.bus == ""


@pytest.mark.parametrize(
    ("doors", "sections", "says"),
    [
        ([{"id": "L1", "lock": "zigbee:x:1"}], {"ble": BLE}, "expected osdp:<bus>:<address>"),
        ([{"id": "L1", "lock": "ble:nuki:F0:00:00"}], {"ble": BLE}, "ble:<family>:<address>"),
        (
            [{"id": "L1", "lock": "ble:acme:F0:00:00:00:00:01"}],
            {"ble": BLE},
            "unknown BLE lock family",
        ),
        ([{"id": "L1", "lock": "ble:nuki:F0:00:00:00:00:01"}], {}, "[ble] transport is not set"),
        ([{"id": "L1", "lock": "osdp:bus0:3", "address": 4}], {}, "disagrees with bus and address"),
        ([{"id": "L1"}], {}, "names no lock"),
        (
            [
                {"id": "L1", "lock": "ble:nuki:F0:00:00:00:00:01"},
                {"id": "L2", "lock": "ble:nuki:f0:00:00:00:00:01"},
            ],
            {"ble": BLE},
            "appears more than once",
        ),
        (
            [{"id": "L1", "lock": "osdp:bus0:1"}],
            {"ble": {"transport": "usb:first"}},
            "usb takes an index",
        ),
        (
            [{"id": "L1", "lock": "osdp:bus0:1"}],
            {"ble": {"transport": "bt:0"}},
            "unknown BLE controller transport",
        ),
    ],
)
def test_bad_lock_references_say_what_is_wrong(
    doors: list[dict[str, object]], sections: dict[str, object], says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(config(doors, **sections), "test.toml")
    assert says in str(err.value)

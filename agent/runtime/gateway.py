"""Builds the running gateway from the configuration: every part and how they connect.

This is the daemon's wiring and nothing else; each part is constructed here and
handed what it needs, so no module reaches for global state. Device threads
(buses, readers) and the link thread reach the asyncio loop only through
``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2

from agent import __version__
from agent.config.schema import Config, DoorSection
from agent.contract.keys import load_gateway_keys, load_platform_keys
from agent.devices.cameras import open_camera, parse_camera_spec
from agent.devices.lockkeys import LockKeyStore
from agent.devices.wlt import decode_card_photo, decoder_from_settings
from agent.door.alerts import AlertPolicy, AlertRules
from agent.door.decision import SitePolicy
from agent.door.doors import DoorDevices, FlowSettings, VisitOutcome
from agent.door.eid import EidSettings, PendingRequests, SerializedCamera
from agent.door.flow import DoorFlow
from agent.face import FaceWorker
from agent.grants.store import GrantStore
from agent.runtime.inbox import DeviceInbox
from agent.state.clock import ClockGuard
from agent.state.reserve import DiskReserve, is_disk_full
from agent.state.secretbox import SecretBox
from agent.state.store import Store
from agent.sync.applier import GatewayApplier
from agent.sync.commands import CommandProcessor
from agent.sync.journal import Journal
from agent.sync.link import Link, LinkSettings
from agent.sync.outbox import Outbox
from drivers.camera.sources import FrameSource
from drivers.idcard.reader import IdCardReader, ReaderStatus
from drivers.osdp.bus import LockSpec, OsdpBus
from drivers.qr.scanner import QrScanner, ScannerStatus

if TYPE_CHECKING:
    from drivers.ble.service import BleLockService

log = logging.getLogger(__name__)

# The "bus" name BLE doors carry in the door flow; their address is their place among the
# configured BLE doors (the BLE device address is in the configuration's `lock`).
BLE_BUS = "ble"


@dataclass
class Part:
    """A started-and-stopped piece of the daemon; ``alive`` is False when its thread died."""

    name: str
    start: Callable[[], None]
    stop: Callable[[], None]
    alive: Callable[[], bool] = lambda: True


@dataclass
class Gateway:
    """Every part of the running gateway."""

    config: Config
    store: Store
    box: SecretBox
    outbox: Outbox
    grants: GrantStore
    clock: ClockGuard
    processor: CommandProcessor
    link: Link
    flow: DoorFlow
    buses: dict[str, OsdpBus]
    readers: dict[str, IdCardReader]
    cameras: dict[str, FrameSource]
    face: FaceWorker | None
    inbox: DeviceInbox
    journal: Journal
    eid_requests: PendingRequests
    ble: BleLockService | None = None
    reserve: DiskReserve | None = None
    scanners: dict[str, QrScanner] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)
    reader_status: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    outcomes: list[VisitOutcome] = field(default_factory=list)

    def remember_outcome(self, outcome: VisitOutcome) -> None:
        """Keep the last hundred outcomes (no personal data in them)."""
        self.outcomes.append(outcome)
        del self.outcomes[:-100]

    def status(self) -> dict[str, Any]:
        """The live state for ``lockgw status`` (no personal data)."""
        now = self.clock.now()
        stats = self.outbox.stats()
        clock = self.clock.state()
        counts = self.grants.counts(now)
        disk = shutil.disk_usage(self.config.gateway.state_dir)
        return {
            "gateway": self.config.gateway.id,
            "version": __version__,
            "uptime_s": round(clock.uptime_s, 1),
            "link": {
                "connected": self.link.connected,
                "last_sync": self.processor.last_sync_at,
                **{k: v for k, v in self.link.counters.items()},
            },
            "outbox": {
                "depth": stats.depth,
                "bytes": stats.bytes,
                "oldest_age_s": stats.oldest_age_s,
                "last_seq": stats.last_seq,
                "acked_through": stats.acked_through,
            },
            "locks": {
                name: [
                    {
                        "address": s.address,
                        "online": s.online,
                        "secure_channel": s.sc_active,
                        "door": s.door_state.value,
                        "tamper": s.tamper,
                        "key_mismatch": s.key_mismatch,
                    }
                    for s in bus.snapshot()
                ]
                for name, bus in self.buses.items()
            }
            | (
                {
                    BLE_BUS: [
                        {
                            "address": s.address,
                            "family": s.family,
                            "online": s.online,
                            "paired": s.paired,
                            "door": s.door,
                            "locked": s.locked,
                            "battery_percent": s.battery_percent,
                            "battery_critical": s.battery_critical,
                        }
                        for s in self.ble.snapshot()
                    ]
                }
                if self.ble is not None
                else {}
            ),
            "ble": None
            if self.ble is None
            else {
                "transport": self.config.ble.transport,
                "controller_up": self.ble.adapter_up,
                "failures": self.ble.failures(),
            },
            "readers": {
                door: {
                    "state": self.reader_status.get(door, reader.state.value),
                    "sam_id": reader.sam_id,
                }
                for door, reader in self.readers.items()
            },
            "cameras": sorted(self.cameras),
            "face": None
            if self.face is None
            else {"ready": self.face.wait_ready(0.05), **self.face.stats()},
            "grants": {
                "stored": counts.grants,
                "active": counts.active,
                "guests": counts.guests,
                "templates_ready": counts.templates_ready,
                "templates_pending": counts.templates_pending,
            },
            "clock": {
                "mode": clock.mode,
                "trusted": clock.trusted,
                "system": clock.system,
                "platform_ts": clock.platform_ts,
                "system_behind_s": round(clock.behind_s, 1),
                "system_ahead_s": round(clock.ahead_s, 1),
                "last_contact": clock.last_contact,
            },
            "disk": {
                "free_bytes": disk.free,
                "total_bytes": disk.total,
                # The reserve was released for a write that found the disk full and
                # could not be taken back yet: the disk is (still) full.
                "full": self.reserve is not None and not self.reserve.held,
            },
            "doors": self.flow.counters,
            "eid": {
                "waiting": self.eid_requests.waiting,
                **{f"results_{k}": v for k, v in self.eid_requests.counters.items()},
                "commands": {k: v for k, v in self.processor.counters.items() if "eid" in k},
                "scanners": {
                    door: {"state": s.state.value, **s.decoder.counters, **s.counters}
                    for door, s in self.scanners.items()
                },
                "camera_codes_refused": {
                    door: d.counters["refused"] for door, d in self.flow.code_scan.decoders.items()
                },
            },
        }


def build_gateway(config: Config, store: Store, loop: asyncio.AbstractEventLoop) -> Gateway:
    """Construct every part (nothing started yet)."""
    state_dir = config.gateway.state_dir
    box = SecretBox.load_or_create(state_dir / "local.key")
    gateway_keys = load_gateway_keys(config.keys.gateway_keys)
    platform_keys = load_platform_keys(config.keys.platform_keys)
    clock = ClockGuard(store, max_ahead_s=config.policy.offline_grace_h * 3600)
    outbox = Outbox(
        store,
        config.gateway.id,
        gateway_keys,
        platform_keys,
        max_bytes=config.outbox.max_bytes,
        warn_ratio=config.outbox.warn_ratio,
        clock=clock.now,
    )
    journal = Journal()
    outbox.add_record_observer(journal.add)
    grants = GrantStore(store, box, platform_keys)
    policy = config.policy
    alerts = config.alerts
    rules = AlertRules(AlertPolicy(**alerts.model_dump()))
    inbox = DeviceInbox(loop)
    buses = _buses(config, state_dir, inbox)
    ble_doors = [d for d in config.doors if d.is_ble]
    ble = _ble(config, ble_doors, inbox) if ble_doors else None
    cameras: dict[str, FrameSource] = {
        d.id: open_camera(parse_camera_spec(d.camera)) for d in config.doors if d.camera
    }
    for door in config.doors:
        if door.qr_camera and door.id in cameras:
            # Read by the code scan and the face check: one read at a time.
            cameras[door.id] = SerializedCamera(cameras[door.id])
    eid_requests = PendingRequests(loop)
    face = _face_worker(config) if cameras else None
    decoder = decoder_from_settings(
        config.readers.wlt_decoder, config.readers.wlt_command, config.readers.wlt_library
    )

    def card_photo_image(photo: bytes, fmt: str) -> bytes | None:
        image = decode_card_photo(photo, fmt, decoder)
        if image is None:
            return None
        ok, png = cv2.imencode(".png", image)
        return png.tobytes() if ok else None

    reserve = DiskReserve(state_dir)
    reserve.ensure()
    flow = DoorFlow(
        store=store,
        outbox=outbox,
        grants=grants,
        clock=clock,
        rules=rules,
        face=face,
        doors=[
            DoorDevices(
                lock_id=d.id,
                room=d.room,
                bus_name=d.bus,
                address=d.address,
                unlock_seconds=d.unlock_seconds,
                bus=buses.get(d.bus),
                camera=cameras.get(d.id),
            )
            for d in config.doors
            if not d.is_ble
        ]
        + [
            DoorDevices(
                lock_id=d.id,
                room=d.room,
                bus_name=BLE_BUS,
                address=i,
                unlock_seconds=d.unlock_seconds,
                bus=ble,
                camera=cameras.get(d.id),
            )
            for i, d in enumerate(ble_doors)
        ],
        settings=FlowSettings(
            policy=SitePolicy(
                reentry_requires_face=policy.reentry_requires_face,
                pin_reentry=policy.pin_reentry,
                liveness=config.face.liveness,
                offline_grace_s=policy.offline_grace_h * 3600,
                pin_max_attempts=policy.pin_max_attempts,
                pin_lockout_s=policy.pin_lockout_s,
                card_reuse_window_s=policy.card_reuse_window_s,
            ),
            face_attempts=config.face.attempts,
            face_timeout_s=config.face.timeout_s,
        ),
        # The chip's photo is a reference only where the site trusts its reader line.
        card_photo_image=card_photo_image if config.face.card_photo_reference else None,
        eid=EidSettings(
            answer_timeout_s=config.eid.answer_timeout_s,
            code_lifetime_s=config.eid.code_lifetime_s,
            face_wait_s=config.eid.face_wait_s,
            camera_scan_interval_s=config.eid.camera_scan_interval_ms / 1000,
            scan_doors=frozenset(d.id for d in config.doors if d.qr_camera),
        ),
        eid_requests=eid_requests,
        # The link is built below (it needs the processor, which needs the flow).
        link_up=lambda: link.connected,
    )
    flow.recorder.reserve = reserve

    def request_unlock(lock: str, seconds: float, reason: str) -> None:
        asyncio.run_coroutine_threadsafe(flow.remote_unlock(lock, seconds, reason), loop)

    applier = GatewayApplier(grants, {d.id for d in config.doors}, request_unlock)
    processor = CommandProcessor(
        store,
        outbox,
        config.gateway.id,
        gateway_keys,
        platform_keys,
        applier,
        max_payload_bytes=config.link.max_payload_bytes,
        now=lambda: dt.datetime.fromtimestamp(clock.now(), dt.UTC),
        on_verified=clock.observe_trusted,
        on_eid_result=lambda command: eid_requests.deliver(command.body),
        # While the disk is full, grants wait at the platform: the reserve's room is for
        # the door's refusals and alerts.
        defer=lambda command: (
            "disk_full"
            if command.type in ("grant.put", "grant.sync") and flow.recorder.disk_full
            else None
        ),
    )
    link = Link(
        LinkSettings.from_config(config.link),
        config.gateway.id,
        outbox,
        functools.partial(_handle_command, processor, reserve, store),
        version=__version__,
        health=functools.partial(_health, buses, ble, processor, grants, clock),
    )
    reader_status: dict[str, str] = {}
    readers = {
        d.id: _reader(d, config, inbox, reader_status) for d in config.doors if d.reader_port
    }
    scanners = {d.id: _qr_scanner(d, inbox) for d in config.doors if d.qr_port}
    gateway = Gateway(
        config=config,
        store=store,
        box=box,
        outbox=outbox,
        grants=grants,
        clock=clock,
        processor=processor,
        link=link,
        flow=flow,
        buses=buses,
        readers=readers,
        cameras=cameras,
        face=face,
        inbox=inbox,
        journal=journal,
        ble=ble,
        reader_status=reader_status,
        reserve=reserve,
        eid_requests=eid_requests,
        scanners=scanners,
    )
    flow.outcome_observers.append(gateway.remember_outcome)
    gateway.parts = _parts(gateway)
    return gateway


def _parts(gw: Gateway) -> list[Part]:
    parts: list[Part] = []
    if gw.face is not None:
        parts.append(Part("face", gw.face.start, gw.face.close))
    parts.append(
        Part("link", gw.link.start, lambda: gw.link.stop(timeout=3.0), lambda: gw.link.running)
    )
    for name, bus in gw.buses.items():
        parts.append(Part(f"bus:{name}", bus.start, bus.stop, _is_running(bus)))
    if gw.ble is not None:
        ble = gw.ble
        parts.append(Part("ble", ble.start, ble.stop, lambda: ble.running))
    for door, reader in gw.readers.items():
        parts.append(
            Part(
                f"reader:{door}",
                reader.start,
                functools.partial(reader.stop, 3.0),
                _is_running(reader),
            )
        )
    for door, scanner in gw.scanners.items():
        parts.append(
            Part(
                f"qr:{door}",
                scanner.start,
                functools.partial(scanner.stop, 3.0),
                _is_running(scanner),
            )
        )
    scan = gw.flow.code_scan
    parts.append(Part("eid-camera-scan", scan.start, scan.stop, lambda: scan.running))
    for door, camera in gw.cameras.items():
        parts.append(Part(f"camera:{door}", lambda: None, camera.close))
    return parts


def _is_running(part: OsdpBus | IdCardReader | QrScanner) -> Callable[[], bool]:
    return lambda: part.running


def _buses(config: Config, state_dir: Path, inbox: DeviceInbox) -> dict[str, OsdpBus]:
    keys = LockKeyStore.open(state_dir)
    buses: dict[str, OsdpBus] = {}
    for bus in config.buses:
        doors = [d for d in config.doors if d.bus == bus.name]
        held_open = min(d.held_open_s for d in doors)
        specs = []
        for door in doors:
            scbk = keys.get(bus.name, door.address) if bus.secure_channel else None
            if bus.secure_channel and scbk is None:
                # Never fall back to plain mode: the lock stays unused (its door fails
                # secure) until a technician runs `lockgw locks keyset`.
                log.error(
                    "lock has no secure-channel key; run `lockgw locks keyset`",
                    extra={"lock": door.id, "bus": bus.name, "address": door.address},
                )
                continue
            specs.append(LockSpec(door.address, scbk=scbk, secure=bus.secure_channel))
        if not specs:
            continue

        on_event = functools.partial(inbox.lock_event, bus.name)
        buses[bus.name] = OsdpBus(bus.port, bus.baudrate, specs, on_event, held_open)
    return buses


def _ble(config: Config, doors: list[DoorSection], inbox: DeviceInbox) -> BleLockService:
    """The BLE locks on the configured controller; unpaired locks stay unused (fail secure)."""
    from agent.devices.blekeys import BleKeyStore
    from drivers.ble.locks import BleLockSpec
    from drivers.ble.manager import ManagerSettings
    from drivers.ble.service import BleLockService
    from drivers.ble.transport import parse_transport

    keys = BleKeyStore.open(config.gateway.state_dir)
    specs = []
    for door in doors:
        credentials = keys.get(door.ble_family, door.ble_address)
        if credentials is None:
            log.error(
                "BLE lock is not paired; run `lockgw locks pair`",
                extra={"lock": door.id, "address": door.ble_address},
            )
        specs.append(BleLockSpec(door.ble_address, door.ble_family, credentials, door.held_open_s))
    section = config.ble
    assert section.transport is not None  # the configuration requires it with BLE doors
    settings = ManagerSettings(
        max_connections=section.max_connections, connect_timeout=section.connect_timeout_s
    )
    return BleLockService(
        parse_transport(section.transport),
        specs,
        functools.partial(inbox.lock_event, BLE_BUS),
        settings,
        offline_after_s=section.offline_after_s,
        poll_s=section.poll_s,
    )


def _face_worker(config: Config) -> FaceWorker:
    from agent.face.verify import settings_from_config

    return FaceWorker(settings_from_config(config.face), timeout_s=config.face.timeout_s)


def _reader(
    door: DoorSection, config: Config, inbox: DeviceInbox, reader_status: dict[str, str]
) -> IdCardReader:
    assert door.reader_port is not None

    def on_status(status: ReaderStatus) -> None:
        reader_status[door.id] = status.state.value
        log.info(
            "reader status",
            extra={"door": door.id, "state": status.state.value, "detail": status.detail},
        )

    return IdCardReader(
        door.reader_port,
        functools.partial(inbox.card, door.id),
        on_status,
        baud=door.reader_baudrate,
        poll_interval=config.readers.poll_interval_ms / 1000,
    )


def _qr_scanner(door: DoorSection, inbox: DeviceInbox) -> QrScanner:
    assert door.qr_port is not None

    def on_status(status: ScannerStatus) -> None:
        log.info(
            "QR scanner status",
            extra={"door": door.id, "state": status.state.value, "detail": status.detail},
        )

    return QrScanner(
        door.qr_port,
        functools.partial(inbox.code, door.id, "scanner"),
        on_status,
        baud=door.qr_baudrate,
    )


def _handle_command(
    processor: CommandProcessor, reserve: DiskReserve, store: Store, payload: bytes
) -> object:
    """A command the store could not take for a full disk is not applied (the platform
    sends it again); the reserve is released so that the incident, its alert and the
    door's refusals are recorded, and ``status`` says the disk is full."""
    try:
        return processor.handle(payload)
    except (sqlite3.Error, OSError) as exc:
        if not is_disk_full(exc):
            raise
    log.error("disk full: a command could not be stored; the platform will send it again")
    if reserve.release():
        store.record_incident("disk_full", "a command could not be stored; reserve released")
    return None


def _health(
    buses: dict[str, OsdpBus],
    ble: BleLockService | None,
    processor: CommandProcessor,
    grants: GrantStore,
    clock: ClockGuard,
) -> dict[str, Any]:
    online = sum(s.online for bus in buses.values() for s in bus.snapshot())
    total = sum(len(bus.snapshot()) for bus in buses.values())
    if ble is not None:
        online += sum(bool(s.online) for s in ble.snapshot())
        total += len(ble.snapshot())
    return {
        "locks_online": online,
        "locks_total": total,
        "last_sync": processor.last_sync_at,
        "grants_active": grants.counts(clock.now()).active,
    }

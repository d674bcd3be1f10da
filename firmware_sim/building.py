"""The simulated building: N doors, the platform, a broker and a cuttable network.

One :class:`Building` starts, under one work directory:

- an OSDP bus (:class:`firmware_sim.locks.SimBus`) with one lock per door at
  addresses 1..N, reachable at ``<dir>/dev/bus0``;
- an ID card reader (:class:`firmware_sim.idreader.IdReaderSimulator`) per
  door at ``<dir>/dev/reader-<door>``;
- a QR scanner module (:class:`firmware_sim.qrscanner.QrScannerSimulator`) per
  door at ``<dir>/dev/qr-<door>``, for electronic ID (网证) codes; a code can
  also be shown to the door's camera (a phone screen held up beside the face);
- a camera scene folder per door, ``<dir>/camera/<door>/``, holding at most
  one link named ``scene.<ext>`` to the photo in front of the lens (the
  daemon's ``folder:`` camera reads it; nothing is copied);
- a private Mosquitto unless a broker is given, a :class:`~firmware_sim.netcut.NetCut`
  proxy the gateway connects through, and the platform simulator connected
  to the broker directly (so a cut only isolates the gateway);
- ``<dir>/gateway.toml`` for ``lockgw run``, and a control socket
  ``<dir>/building.sock`` (see :mod:`firmware_sim.building_ctl`).

The gateway runs as a separate process. Its keys are made by the real CLI
(``lockgw keys init``); :meth:`Building.pin_gateway_keys` registers their
public half with the platform. This module never imports ``agent``; it runs
the ``lockgw`` command when asked to (:meth:`Building.init_gateway_keys`,
:meth:`Building.provision_lock_keys`).

Run ``python -m firmware_sim.building_ctl --doors 4 --dir D`` for a building a
person can drive from another shell with ``python -m firmware_sim.building_ctl ctl``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from jwcrypto import jwk as cjwk

from firmware_sim.ble.process import BleRadioProcess
from firmware_sim.broker import MosquittoBroker
from firmware_sim.idcards import VirtualCard, sample_card
from firmware_sim.idreader import IdReaderSimulator
from firmware_sim.locks import SimBus, SimLock
from firmware_sim.netcut import CutMode, NetCut
from firmware_sim.platform import PlatformSim, SimKeys
from firmware_sim.qrcodes import hold_up
from firmware_sim.qrscanner import QrScannerSimulator

log = logging.getLogger(__name__)

BUS_NAME = "bus0"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_GATEWAY_ID = "sim-gw-01"

# Link timings for a simulation: notice a cut and come back within seconds.
SIM_LINK = {
    "keepalive_s": 10,
    "retry_after_s": 5.0,
    "reconnect_min_s": 0.5,
    "reconnect_max_s": 2.0,
    "health_interval_s": 5.0,
}


class BuildingError(Exception):
    """A building action could not be done; the message says which and why."""


def lockgw_command() -> list[str]:
    """How to run the real ``lockgw`` CLI from this interpreter's environment."""
    exe = Path(sys.executable).with_name("lockgw")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "agent.cli.main"]


def iso_utc(delta_s: float = 0.0) -> str:
    """Now plus ``delta_s`` as RFC 3339 UTC with milliseconds (the contract's format)."""
    moment = datetime.now(UTC) + timedelta(seconds=delta_s)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def door_ids(doors: int | Sequence[str]) -> list[str]:
    """``3`` -> ``["L101", "L102", "L103"]``; a list is taken as given (checked for repeats)."""
    if isinstance(doors, int):
        if not 1 <= doors <= 126:
            raise ValueError(f"a simulated building has 1..126 doors, not {doors}")
        return [f"L{101 + i}" for i in range(doors)]
    ids = [doors] if isinstance(doors, str) else [str(d) for d in doors]
    if not ids or len(set(ids)) != len(ids) or len(ids) > 126:
        raise ValueError("door ids must be 1..126 distinct names")
    for door in ids:
        if not door or "/" in door or door.startswith("."):
            raise ValueError(f"door id {door!r} cannot name a file")
    return ids


# ----------------------------------------------------------------- TOML out
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)  # JSON strings are TOML basic strings
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to the configuration")


def to_toml(sections: Mapping[str, Any]) -> str:
    """Tables of scalars and arrays of tables (``[[doors]]``): all a gateway config needs."""
    out: list[str] = []
    for name, content in sections.items():
        if isinstance(content, list):
            for table in content:
                out.append(f"[[{name}]]")
                out += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
                out.append("")
        else:
            out.append(f"[{name}]")
            out += [f"{k} = {_toml_value(v)}" for k, v in content.items() if v is not None]
            out.append("")
    return "\n".join(out)


# ------------------------------------------------------------ the platform
CARD_PHOTO_SIZE = (102, 126)  # what a decoded WLT card photo measures
GRANT_PHOTO_SIZE = (204, 252)


def guest_entry(
    card: VirtualCard, guest_id: str | None = None, face: Path | None = None
) -> dict[str, Any]:
    """A ``grant.put`` guest for the holder of ``card``, with a face photo if given.

    The face goes as a portrait crop of :data:`GRANT_PHOTO_SIZE` (a registration
    photo, a few kB), not the whole file.
    """
    entry: dict[str, Any] = {
        "guest_id": guest_id or f"guest-{uuid.uuid4().hex[:8]}",
        "id_number": card.id_number,
        "name": card.name,
    }
    if face is not None:
        jpeg = portrait_jpeg(face, GRANT_PHOTO_SIZE)
        entry["face_jpeg_b64"] = base64.b64encode(jpeg).decode("ascii")
    return entry


def card_with_photo(photo: Path, **fields: Any) -> VirtualCard:
    """A valid card (``sample_card`` plus ``fields``) whose chip photo is a portrait of ``photo``.

    The chip carries a 102 x 126 JPEG where a real card has 1024 bytes of WLT
    (the reader contract allows a marked JPEG in the simulator); at quality 75
    it is about 3-3.5 kB, so a read takes ~0.3 s longer at 115200 baud.
    """
    card = sample_card(**fields)
    card.photo = portrait_jpeg(photo, CARD_PHOTO_SIZE, quality=75)
    card.photo_format = "jpeg"
    return card


@functools.lru_cache(maxsize=64)
def portrait_jpeg(photo: Path, size: tuple[int, int], quality: int = 90) -> bytes:
    """Crop ``photo`` around its largest face to ``size`` (w, h), as JPEG bytes.

    Without a detectable face the centre is cropped. Memory only; nothing written.
    Kept per (photo, size, quality): the face detector (dlib) holds the interpreter
    lock for a quarter second a photo, which would starve the simulated locks' threads
    in this process whenever a test makes guests while doors are in use.
    """
    img = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if img is None:
        raise BuildingError(f"{photo} is not an image this simulator can read")
    w_out, h_out = size
    h, w = img.shape[:2]
    box = _largest_face(img)
    if box is None:
        cx, cy, cw = w / 2, h / 2, float(w)
    else:
        left, top, right, bottom = box
        cw = 2.0 * (right - left)
        cx, cy = (left + right) / 2, (top + bottom) / 2 + 0.08 * cw * h_out / w_out
    ch = cw * h_out / w_out
    scale = min(1.0, w / cw, h / ch)  # the crop must fit in the image
    cw, ch = cw * scale, ch * scale
    x0 = int(min(max(cx - cw / 2, 0), w - cw))
    y0 = int(min(max(cy - ch / 2, 0), h - ch))
    crop = img[y0 : y0 + int(ch), x0 : x0 + int(cw)]
    small = cv2.resize(crop, (w_out, h_out), interpolation=cv2.INTER_AREA)
    ok, enc = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise BuildingError(f"{photo}: could not encode a JPEG")
    return bytes(enc.tobytes())


def _largest_face(img: np.ndarray) -> tuple[int, int, int, int] | None:
    import dlib  # only here: the rest of the building needs no face library

    h, w = img.shape[:2]
    f = min(1.0, 800 / max(h, w))
    small = cv2.resize(img, (round(w * f), round(h * f))) if f < 1 else img
    rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    detector = dlib.get_frontal_face_detector()
    rects = list(detector(rgb, 0)) or list(detector(rgb, 1))
    if not rects:
        return None
    r = max(rects, key=lambda r: r.width() * r.height())
    return (
        round(r.left() / f),
        round(r.top() / f),
        round(r.right() / f),
        round(r.bottom() / f),
    )


def summarize(env: Mapping[str, Any]) -> dict[str, Any]:
    """An envelope for printing: photos replaced by their size."""
    body = {
        k: (f"<{len(v)} chars>" if k.endswith("_b64") and isinstance(v, str) else v)
        for k, v in dict(env.get("body") or {}).items()
    }
    return {"seq": env.get("seq"), "type": env.get("type"), "ts": env.get("ts"), "body": body}


class PlatformHandle:
    """The platform simulator as seen for this building's gateway."""

    def __init__(self, sim: PlatformSim, gateway_id: str) -> None:
        self.sim = sim
        self.gateway_id = gateway_id

    # ------------------------------------------------------------- commands
    def send(self, msg_type: str, body: dict[str, Any], **kwargs: Any) -> str:
        """Seal and publish any command; returns its id (the ``ack`` names it)."""
        try:
            return self.sim.send(self.gateway_id, msg_type, body, **kwargs)
        except KeyError:
            raise BuildingError(
                f"gateway {self.gateway_id} has no pinned keys yet (pin_gateway_keys first)"
            ) from None

    def put_grant(
        self,
        grant_id: str,
        locks: Sequence[str],
        guests: Sequence[dict[str, Any]],
        *,
        room: str = "",
        hours: float = 24.0,
        valid_from: str | None = None,
        valid_until: str | None = None,
        pin: str | None = None,
        policy: dict[str, Any] | None = None,
    ) -> str:
        """Send ``grant.put`` (guests from :func:`guest_entry`); valid from a minute ago."""
        body: dict[str, Any] = {
            "grant_id": grant_id,
            "room": room or str(locks[0]).lstrip("L"),
            "locks": list(locks),
            "valid_from": valid_from or iso_utc(-60),
            "valid_until": valid_until or iso_utc(hours * 3600),
            "guests": list(guests),
        }
        if pin is not None:
            body["pin"] = pin
        if policy is not None:
            body["policy"] = policy
        return self.send("grant.put", body)

    def revoke(self, grant_id: str, reason: str = "checkout") -> str:
        """Send ``grant.revoke``."""
        return self.send("grant.revoke", {"grant_id": grant_id, "reason": reason})

    def sync_grants(self, grants: Sequence[dict[str, Any]]) -> str:
        """Send ``grant.sync`` with the full set of ``grant.put`` bodies."""
        return self.send("grant.sync", {"grants": list(grants)})

    def remote_unlock(self, lock: str, seconds: int = 5, reason: str = "remote") -> str:
        """Send ``lock.unlock``."""
        return self.send("lock.unlock", {"lock": lock, "seconds": seconds, "reason": reason})

    def ping(self) -> str:
        return self.send("ping", {})

    def wait_ack(self, cmd_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """The gateway's ack body for ``cmd_id``; TimeoutError if none comes."""
        return self.sim.wait_ack(self.gateway_id, cmd_id, timeout)

    # ------------------------------------------------------------- received
    def received(self, msg_type: str | None = None) -> list[dict[str, Any]]:
        """Gateway messages opened, verified and deduplicated, in seq order."""
        return self.sim.events(self.gateway_id, msg_type)

    def wait_for_event(
        self,
        msg_type: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 20.0,
        *,
        after_seq: int = 0,
    ) -> dict[str, Any]:
        """The first message of ``msg_type`` past ``after_seq`` whose body passes ``predicate``."""
        found: list[dict[str, Any]] = []

        def match() -> bool:
            view = self.sim.views.get(self.gateway_id)
            if view is None:
                return False
            for seq in sorted(view.messages):
                env = view.messages[seq]
                if (
                    seq > after_seq
                    and env["type"] == msg_type
                    and (predicate is None or predicate(env["body"]))
                ):
                    found.append(env)
                    return True
            return False

        if not self.sim.wait_for(match, timeout):
            raise TimeoutError(f"no {msg_type} event from {self.gateway_id} within {timeout:g} s")
        return found[0]

    @property
    def last_seq(self) -> int:
        """Highest seq received so far (0 if none)."""
        return self.sim.view(self.gateway_id).max_seq

    def status(self) -> dict[str, Any] | None:
        """The gateway's retained ``status`` document, if seen."""
        return self.sim.view(self.gateway_id).status

    def health(self) -> dict[str, Any] | None:
        return self.sim.view(self.gateway_id).health


# ----------------------------------------------------------------- doors
@dataclass(frozen=True)
class DoorInfo:
    """Where the gateway finds one door's devices."""

    id: str
    room: str
    address: int
    reader_port: Path
    camera_dir: Path
    qr_port: Path
    ble_index: int | None = None  # its lock is the radio's lock number ble_index (BLE)

    @property
    def camera(self) -> str:
        """The ``camera`` value of this door in the gateway configuration."""
        return f"folder:{self.camera_dir}"


class Building:
    """A running simulated building; see the module docstring. Use as a context manager."""

    def __init__(
        self,
        doors: int | Sequence[str] = 2,
        workdir: Path | str | None = None,
        *,
        broker: tuple[str, int] | None = None,
        secure_channel: bool = False,
        gateway_id: str = DEFAULT_GATEWAY_ID,
        bus_baudrate: int = 115200,
        reader_baudrate: int = 115200,
        config_overrides: Mapping[str, Any] | None = None,
        ble_doors: Sequence[str] = (),
    ) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lockgw-building-")).resolve()
        self.gateway_id = gateway_id
        self.secure_channel = secure_channel
        self.bus_baudrate = bus_baudrate
        self.reader_baudrate = reader_baudrate
        self._external_broker = broker
        self._config_overrides = dict(config_overrides or {})
        ids = door_ids(doors)
        unknown_ble = set(ble_doors) - set(ids)
        if unknown_ble:
            raise BuildingError(f"ble_doors names unknown doors: {', '.join(sorted(unknown_ble))}")
        ble_order = [d for d in ids if d in set(ble_doors)]
        self.doors = [
            DoorInfo(
                id=door,
                room=door.lstrip("L") or door,
                address=i + 1,
                reader_port=self.workdir / "dev" / f"reader-{door}",
                camera_dir=self.workdir / "camera" / door,
                qr_port=self.workdir / "dev" / f"qr-{door}",
                ble_index=ble_order.index(door) if door in ble_order else None,
            )
            for i, door in enumerate(ids)
        ]
        self._by_id = {d.id: d for d in self.doors}
        self.ble: BleRadioProcess | None = None
        self.broker: MosquittoBroker | None = None
        self.proxy: NetCut | None = None
        self.bus: SimBus | None = None
        self.readers: dict[str, IdReaderSimulator] = {}
        self.qr_scanners: dict[str, QrScannerSimulator] = {}
        self._codes_shown = 0
        self._platform: PlatformHandle | None = None
        self._scene_mutex = threading.Lock()
        self._started = False
        self.gateway_pinned = False

    # ------------------------------------------------------------ paths
    @property
    def dev_dir(self) -> Path:
        return self.workdir / "dev"

    @property
    def bus_port(self) -> Path:
        """The lock bus the daemon opens (a stable symlink to the pty)."""
        return self.dev_dir / BUS_NAME

    @property
    def state_dir(self) -> Path:
        """The gateway's state directory named in the configuration."""
        return self.workdir / "state"

    @property
    def keys_dir(self) -> Path:
        return self.workdir / "keys"

    @property
    def gateway_keys_path(self) -> Path:
        return self.keys_dir / "gateway.jwks"

    @property
    def platform_keys_path(self) -> Path:
        """The platform's public JWK Set the gateway pins."""
        return self.keys_dir / "platform.jwks"

    @property
    def config_path(self) -> Path:
        return self.workdir / "gateway.toml"

    @property
    def gateway_socket_path(self) -> Path:
        """The daemon's own control socket (``[gateway] control_socket``)."""
        return self.workdir / "gateway.sock"

    @property
    def control_socket_path(self) -> Path:
        """This building's control socket (JSON lines)."""
        return self.workdir / "building.sock"

    @property
    def broker_address(self) -> tuple[str, int]:
        """Where the broker listens (the platform connects here directly)."""
        if self._external_broker is not None:
            return self._external_broker
        if self.broker is None:
            raise BuildingError("the building is not started")
        return self.broker.address

    @property
    def link_address(self) -> tuple[str, int]:
        """Where the gateway connects: the cuttable proxy."""
        if self.proxy is None:
            raise BuildingError("the building is not started")
        return self.proxy.address

    @property
    def platform(self) -> PlatformHandle:
        if self._platform is None:
            raise BuildingError("the building is not started")
        return self._platform

    def door(self, door: str) -> DoorInfo:
        """The door named ``door``; BuildingError if there is none."""
        try:
            return self._by_id[door]
        except KeyError:
            known = ", ".join(self._by_id)
            raise BuildingError(f"no door {door!r} in this building (doors: {known})") from None

    def lock(self, door: str) -> SimLock:
        """The simulated lock of ``door`` (for fault injection beyond this API)."""
        if self.bus is None:
            raise BuildingError("the building is not started")
        return self.bus.locks[self.door(door).address]

    def reader(self, door: str) -> IdReaderSimulator:
        """The simulated ID reader of ``door``."""
        info = self.door(door)
        if info.id not in self.readers:
            raise BuildingError("the building is not started")
        return self.readers[info.id]

    def qr_scanner(self, door: str) -> QrScannerSimulator:
        """The simulated QR scanner module of ``door``."""
        info = self.door(door)
        if info.id not in self.qr_scanners:
            raise BuildingError("the building is not started")
        return self.qr_scanners[info.id]

    # -------------------------------------------------------- lifecycle
    def start(self) -> Building:
        """Start everything and write the gateway configuration; returns self."""
        if self._started:
            return self
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        for sub in ("dev", "camera", "keys", "platform", "locks"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        if self._external_broker is None:
            self.broker = MosquittoBroker(self.workdir / "broker")
            self.broker.start()
        self.proxy = NetCut(self.broker_address)
        self._start_locks()
        for info in self.doors:
            reader = IdReaderSimulator(baud=self.reader_baudrate)
            self.readers[info.id] = reader
            _relink(info.reader_port, Path(reader.start()))
            scanner = QrScannerSimulator(name=f"qr-{info.id}")
            self.qr_scanners[info.id] = scanner
            _relink(info.qr_port, Path(scanner.start()))
            info.camera_dir.mkdir(exist_ok=True)
        keys = self._platform_keys()
        _write_private(self.platform_keys_path, json.dumps(keys.public_jwks(), indent=2), 0o644)
        host, port = self.broker_address
        sim = PlatformSim(host, port, {}, keys, client_id=f"platform-sim-{self.gateway_id}")
        for gw, jwks in self._load_pins().items():
            sim.pin_gateway(gw, jwks)
            self.gateway_pinned = self.gateway_pinned or gw == self.gateway_id
        self._platform = PlatformHandle(sim, self.gateway_id)
        sim.start()
        self.write_gateway_config(self.config_path, **self._config_overrides)
        log.info("simulated building started", extra={"doors": len(self.doors)})

    @property
    def osdp_doors(self) -> list[DoorInfo]:
        return [d for d in self.doors if d.ble_index is None]

    @property
    def ble_doors(self) -> list[DoorInfo]:
        return [d for d in self.doors if d.ble_index is not None]

    def ble_address(self, door: str) -> str:
        """The BLE device address of ``door``'s lock."""
        info = self.door(door)
        if info.ble_index is None or self.ble is None:
            raise BuildingError(f"door {door!r} has no BLE lock")
        return self.ble.addresses[info.ble_index]

    def _start_locks(self) -> None:
        if self.ble_doors:
            self.ble = BleRadioProcess(len(self.ble_doors), pairing=True)
        self.bus = SimBus(self.bus_port, self.bus_baudrate)
        flash = self._load_flash()
        for info in self.osdp_doors:
            if self.secure_channel:
                key = flash.get(info.address)
                self.bus.add_lock(info.address, key, install_mode=key is None)
            else:
                self.bus.add_lock(info.address, None, secure=False)
        self.bus.start()

    def stop(self) -> None:
        """Stop everything (safe to call twice); a temporary work dir is removed."""
        if self._platform is not None:
            self._platform.sim.stop()
            self._platform = None
        for reader in self.readers.values():
            reader.stop()
        self.readers.clear()
        for scanner in self.qr_scanners.values():
            scanner.stop()
        self.qr_scanners.clear()
        if self.bus is not None:
            self.save_lock_keys()
            self.bus.stop()
            self.bus = None
        if self.ble is not None:
            self.ble.close()
            self.ble = None
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        self._started = False
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Building:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------ persistence
    def _platform_keys(self) -> SimKeys:
        path = self.workdir / "platform" / "keys.json"
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            return SimKeys(sig=cjwk.JWK(**saved["sig"]), enc=cjwk.JWK(**saved["enc"]))
        keys = SimKeys()
        doc = {"sig": json.loads(keys.sig.export_private()), "enc": json.loads(keys.enc.export())}
        _write_private(path, json.dumps(doc), 0o600)
        return keys

    def _load_pins(self) -> dict[str, dict[str, Any]]:
        path = self.workdir / "platform" / "gateways.json"
        if not path.exists():
            return {}
        return dict(json.loads(path.read_text(encoding="utf-8")))

    def _load_flash(self) -> dict[int, bytes]:
        path = self.workdir / "locks" / "flash.json"
        if not path.exists():
            return {}
        return {int(a): bytes.fromhex(k) for a, k in json.loads(path.read_text()).items()}

    def save_lock_keys(self) -> None:
        """Keep the simulated locks' keys (their "flash") for the next start in this dir."""
        if self.bus is None:
            return
        flash = {str(a): lk.scbk.hex() for a, lk in self.bus.locks.items() if lk.scbk is not None}
        _write_private(self.workdir / "locks" / "flash.json", json.dumps(flash), 0o600)

    # ---------------------------------------------------- configuration
    def write_gateway_config(
        self,
        path: Path | None = None,
        gateway_id: str | None = None,
        state_dir: Path | None = None,
        keys_dir: Path | None = None,
        **overrides: Any,
    ) -> Path:
        """Write a lockgw TOML for this building; returns its path.

        ``overrides`` maps a section (``gateway``, ``link``, ``keys``, ``outbox``,
        ``readers``, ``face``, ``policy``, ``metrics``) to keys merged into it;
        ``doors`` is merged into every door and ``per_door`` maps a door id to
        keys for that door only. ``None`` values drop a key.
        """
        path = Path(path or self.config_path)
        state_dir = Path(state_dir or self.state_dir)
        keys_dir = Path(keys_dir or self.keys_dir)
        host, port = self.link_address
        sections: dict[str, Any] = {
            "gateway": {
                "id": gateway_id or self.gateway_id,
                "state_dir": state_dir,
                "control_socket": self.gateway_socket_path,
            },
            "link": {"transport": "tcp", "host": host, "port": port, **SIM_LINK},
            "keys": {
                "gateway_keys": keys_dir / "gateway.jwks",
                "platform_keys": keys_dir / "platform.jwks",
            },
        }
        per_door: dict[str, dict[str, Any]] = dict(overrides.pop("per_door", {}) or {})
        all_doors: dict[str, Any] = dict(overrides.pop("doors", {}) or {})
        unknown = set(per_door) - set(self._by_id)
        if unknown:
            raise BuildingError(f"per_door names unknown doors: {', '.join(sorted(unknown))}")
        for section, values in overrides.items():
            if not isinstance(values, Mapping):
                raise BuildingError(f"override {section!r} must be a table (dict)")
            sections.setdefault(section, {}).update(values)
        sections["buses"] = [
            {
                "name": BUS_NAME,
                "port": self.bus_port,
                "baudrate": self.bus_baudrate,
                "secure_channel": self.secure_channel,
            }
        ][: 1 if self.osdp_doors else 0]
        if self.ble is not None:
            sections["ble"] = {
                "transport": self.ble.transport,
                "connect_timeout_s": 2.0,
                "offline_after_s": 10.0,
                **sections.get("ble", {}),
            }
        sections["doors"] = [
            {
                "id": d.id,
                "room": d.room,
                **(
                    {"lock": f"ble:nuki:{self.ble_address(d.id)}"}
                    if d.ble_index is not None
                    else {"bus": BUS_NAME, "address": d.address}
                ),
                "reader_port": d.reader_port,
                "reader_baudrate": self.reader_baudrate,
                "camera": d.camera,
                "qr_port": d.qr_port,
                **all_doors,
                **per_door.get(d.id, {}),
            }
            for d in self.doors
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, to_toml(sections), 0o644)
        if keys_dir != self.keys_dir and self.platform_keys_path.exists():
            # The gateway pins the platform's public set from its own keys dir.
            text = self.platform_keys_path.read_text(encoding="utf-8")
            _write_private(keys_dir / "platform.jwks", text, 0o644)
        return path

    # ------------------------------------------------------------- keys
    def pin_gateway_keys(self, public_jwks: Mapping[str, Any]) -> None:
        """Register the gateway's public JWK Set with the platform (kept in the work dir)."""
        public = {
            "keys": [
                {k: v for k, v in key.items() if k not in ("d", "lockgw_retire_at")}
                for key in public_jwks.get("keys", [])
            ]
        }
        try:
            self.platform.sim.pin_gateway(self.gateway_id, public)
        except (KeyError, TypeError, ValueError) as exc:
            raise BuildingError(f"not a usable gateway JWK Set: {exc}") from None
        pins = self._load_pins()
        pins[self.gateway_id] = public
        _write_private(self.workdir / "platform" / "gateways.json", json.dumps(pins), 0o644)
        self.gateway_pinned = True

    def init_gateway_keys(self, cli: Sequence[str] | None = None) -> dict[str, Any]:
        """Run ``lockgw keys init`` (or ``keys show`` if they exist) and pin the public set."""
        action = "show" if self.gateway_keys_path.exists() else "init"
        out = self._run_cli(
            [
                *(cli or lockgw_command()),
                "keys",
                action,
                "--config",
                str(self.config_path),
                "--json",
            ]
        )
        public = dict(json.loads(out)["jwks"])
        self.pin_gateway_keys(public)
        return public

    def provision_lock_keys(self, cli: Sequence[str] | None = None) -> list[int]:
        """Give every lock still in install mode a key with ``lockgw locks keyset --install``.

        The technician's procedure, run before the daemon holds the bus; the keys
        go to the gateway's sealed key store under :attr:`state_dir`. Returns the
        addresses keyed.
        """
        if not self.secure_channel:
            raise BuildingError("this building runs its locks without secure channel")
        if self.bus is None:
            raise BuildingError("the building is not started")
        keyed = []
        for info in self.osdp_doors:
            if self.bus.locks[info.address].scbk is not None:
                continue
            self._run_cli(
                [
                    *(cli or lockgw_command()),
                    "locks",
                    "keyset",
                    str(info.address),
                    "--install",
                    "--port",
                    str(self.bus_port),
                    "--state-dir",
                    str(self.state_dir),
                    "--bus",
                    BUS_NAME,
                ]
            )
            keyed.append(info.address)
        self.save_lock_keys()
        return keyed

    def pair_ble_locks(self, cli: Sequence[str] | None = None) -> list[str]:
        """Pair every BLE door's lock with ``lockgw locks pair`` (the technician's step)."""
        paired = []
        for info in self.ble_doors:
            argv = [*(cli or lockgw_command()), "locks", "pair", info.id]
            self._run_cli([*argv, "--config", str(self.config_path)])
            paired.append(info.id)
        return paired

    @staticmethod
    def _run_cli(argv: list[str]) -> str:
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildingError(f"could not run {' '.join(argv[:3])}: {exc}") from None
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise BuildingError(
                f"`lockgw {' '.join(argv[1:3])}` failed ({done.returncode}): {last[0]}"
            )
        return done.stdout

    # ---------------------------------------------------------- actions
    def present_card(self, door: str, card: VirtualCard) -> None:
        """Put ``card`` on the door's ID reader (a new presentation)."""
        self.reader(door).present(card)
        log.info("card presented", extra={"door": door})

    def remove_card(self, door: str) -> None:
        self.reader(door).remove()

    def show_face(self, door: str, photo: Path | str | None) -> None:
        """Put ``photo`` (a face, a group, anything) in front of the camera; None = nobody."""
        folder = self.door(door).camera_dir
        with self._scene_mutex:
            if photo is None:
                for old in folder.glob("scene.*"):
                    old.unlink(missing_ok=True)
                return
            target = Path(photo).resolve()
            suffix = target.suffix.lower()
            if not target.is_file():
                raise BuildingError(f"photo {photo} does not exist")
            if suffix not in IMAGE_SUFFIXES:
                raise BuildingError(f"photo {photo}: expected one of {', '.join(IMAGE_SUFFIXES)}")
            scene = folder / f"scene{suffix}"
            # Another kind of file first goes away (a moment of "nobody" is fail-secure);
            # the same kind is replaced atomically.
            for old in folder.glob("scene.*"):
                if old != scene:
                    old.unlink(missing_ok=True)
            _relink(scene, target)

    def scan_code(self, door: str, code: str) -> None:
        """A guest holds their phone's 网证 code to the door's QR scanner."""
        self.qr_scanner(door).show(code)
        log.info("code shown to the scanner", extra={"door": door})

    def show_code(self, door: str, code: str, photo: Path | str) -> Path:
        """The guest (``photo``) holds the code up to the door's camera; returns the scene file.

        The scene is a picture made for the moment (the face and a phone screen with the
        code, generated with zxing-cpp), kept under the work dir until the building stops.
        """
        img = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if img is None:
            raise BuildingError(f"photo {photo} is not an image this simulator can read")
        frame = hold_up(img, code)
        folder = self.workdir / "codes"
        folder.mkdir(exist_ok=True)
        self._codes_shown += 1
        scene = folder / f"{door}-{self._codes_shown}.png"
        if not cv2.imwrite(str(scene), frame):
            raise BuildingError(f"could not write {scene}")
        self.show_face(door, scene)
        return scene

    def face(self, door: str) -> Path | None:
        """The photo currently in front of the door's camera, or None."""
        for scene in self.door(door).camera_dir.glob("scene.*"):
            return Path(os.readlink(scene))
        return None

    def open_door(self, door: str) -> None:
        """Someone opens the door (the contact reports open)."""
        if self._ble_door(door, op="door", state="open"):
            return
        self.lock(door).open_door()

    def close_door(self, door: str) -> None:
        if self._ble_door(door, op="door", state="closed"):
            return
        self.lock(door).close_door()

    def _ble_door(self, door: str, **op: Any) -> bool:
        """Send ``op`` to a BLE door's lock; False if the door's lock is on the bus."""
        info = self.door(door)
        if info.ble_index is None:
            return False
        if self.ble is None:
            raise BuildingError("the building is not started")
        self.ble.request(lock=info.ble_index, **op)
        return True

    def lock_power(self, door: str, on: bool) -> None:
        """Cut (False) or restore (True) the lock's power."""
        lock = self.lock(door)
        if on:
            lock.power_on()
        else:
            lock.power_off()

    def tamper(self, door: str, on: bool) -> None:
        self.lock(door).set_tamper(on)

    def keypad(self, door: str, digits: str) -> None:
        """Type ``digits`` (0-9, ``*``, ``#``) on the lock's keypad."""
        if not digits or any(c not in "0123456789*#" for c in digits):
            raise BuildingError("keypad input must be digits, '*' or '#'")
        self.lock(door).press_keys(digits)

    def relay_unlocked(self, door: str) -> bool:
        """True while the lock's relay holds the door unlocked."""
        info = self.door(door)
        if info.ble_index is not None and self.ble is not None:
            return self.ble.unlocked(info.ble_index)
        return self.lock(door).unlocked

    def wait_relay(self, door: str, unlocked: bool, timeout: float = 10.0) -> bool:
        info = self.door(door)
        if info.ble_index is not None and self.ble is not None:
            return self.ble.wait_unlocked(info.ble_index, unlocked, timeout)
        return self.lock(door).wait_relay(unlocked, timeout)

    def led(self, door: str) -> dict[str, Any] | None:
        """The last LED command the lock received."""
        return self.lock(door).record.led

    def buzzer(self, door: str) -> dict[str, Any] | None:
        return self.lock(door).record.buzzer

    def cut_network(self, mode: CutMode = "reset") -> None:
        """Cut the gateway off the broker (the platform stays connected)."""
        if self.proxy is None:
            raise BuildingError("the building is not started")
        self.proxy.cut(mode)
        log.info("gateway network cut", extra={"mode": mode})

    def restore_network(self) -> None:
        if self.proxy is None:
            raise BuildingError("the building is not started")
        self.proxy.restore()
        log.info("gateway network restored")

    @property
    def network_cut(self) -> bool:
        return self.proxy is not None and self.proxy.is_cut

    def wait_for_event(
        self,
        msg_type: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 20.0,
        *,
        after_seq: int = 0,
    ) -> dict[str, Any]:
        """See :meth:`PlatformHandle.wait_for_event`."""
        return self.platform.wait_for_event(msg_type, predicate, timeout, after_seq=after_seq)

    def status(self) -> dict[str, Any]:
        """Everything a person wants to see at a glance (no personal data)."""
        doors = []
        for info in self.doors:
            lock = self.lock(info.id) if self.bus is not None and info.ble_index is None else None
            face = self.face(info.id)
            doors.append(
                {
                    "id": info.id,
                    "address": info.address,
                    "reader_port": str(info.reader_port),
                    "camera": info.camera,
                    "face": face.name if face else None,
                    "relay_unlocked": bool(lock and lock.unlocked),
                    "door_open": bool(lock and lock.contact_open),
                    "tamper": bool(lock and lock.tamper),
                    "powered": bool(lock and lock.powered),
                    "lock_online": bool(lock and lock.online),
                    "secure_channel": bool(lock and lock.sc_active),
                }
            )
        platform = self._platform
        return {
            "workdir": str(self.workdir),
            "config": str(self.config_path),
            "gateway_id": self.gateway_id,
            "bus_port": str(self.bus_port),
            "broker": list(self.broker_address),
            "link": list(self.link_address) if self.proxy else None,
            "network_cut": self.proxy.mode if self.proxy else None,
            "gateway_keys_pinned": self.gateway_pinned,
            "events_received": platform.last_seq if platform else 0,
            "doors": doors,
        }


def _relink(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically (a temporary link renamed over it)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _write_private(path: Path, text: str, mode: int) -> None:
    """Write ``text`` atomically with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)

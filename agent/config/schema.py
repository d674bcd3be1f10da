"""The gateway configuration: one TOML file validated into typed objects.

Every key has a type, a default where one is safe, and a description; the
example file and the README's configuration reference are generated from these
models (``agent.config.reference``), so the documentation cannot drift from the code.
Unknown keys are errors: a misspelt key must not silently fall back to a default.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from drivers.ble.families import FAMILIES
from drivers.ble.transport import TransportSpecError, parse_transport

DEFAULT_CONFIG_PATH = Path("/etc/lockgw/gateway.toml")
GATEWAY_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{2,62}$"
SERIAL_BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400)


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` lists each one with its key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration in {source}:\n{lines}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    """Identity of this gateway and where it keeps its state."""

    id: Annotated[
        str,
        Field(
            pattern=GATEWAY_ID_PATTERN,
            description="Gateway id registered at the platform; MQTT client id is `gw-<id>`.",
            examples=["demo-gw-01"],
        ),
    ]
    state_dir: Path = Field(
        Path("/var/lib/lockgw"),
        description="Directory for the database, local key file and lock keys (mode 0700).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level written to the journal."
    )
    control_socket: Path = Field(
        Path("/run/lockgw/control.sock"),
        description="Unix socket the CLI uses to reach the running daemon (mode 0660).",
    )


class LinkSection(_Section):
    """The MQTT 5 session with the platform's broker."""

    host: str = Field("127.0.0.1", min_length=1, description="Broker host name or address.")
    port: int = Field(8883, ge=1, le=65535, description="Broker port.")
    transport: Literal["tls", "tcp"] = Field(
        "tls",
        description="`tls` (client certificate) in production; `tcp` only for a loopback broker.",
    )
    ca_file: Path | None = Field(
        None,
        description="CA bundle that signed the broker certificate.",
        examples=["/etc/lockgw/tls/ca.pem"],
    )
    cert_file: Path | None = Field(
        None,
        description="This gateway's client certificate (PEM).",
        examples=["/etc/lockgw/tls/gateway.crt"],
    )
    key_file: Path | None = Field(
        None,
        description="Private key of the client certificate (PEM).",
        examples=["/etc/lockgw/tls/gateway.key"],
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval.")
    session_expiry_s: int = Field(
        604800,
        ge=604800,
        description="MQTT session expiry; at least a week so commands wait at the broker.",
    )
    health_interval_s: float = Field(60.0, ge=1, le=3600, description="Period of `health`.")
    inflight_window: int = Field(
        64, ge=1, le=1000, description="Sealed messages published and not yet PUBACKed, at most."
    )
    retry_after_s: float = Field(
        30.0,
        ge=0.5,
        le=3600,
        description="Republish a message not covered by `sync.ack` after this.",
    )
    reconnect_min_s: float = Field(1.0, gt=0, le=60, description="First reconnect delay.")
    reconnect_max_s: float = Field(60.0, gt=0, le=3600, description="Longest reconnect delay.")
    max_payload_bytes: int = Field(
        1_048_576,
        ge=4096,
        le=268_435_455,
        description="Inbound commands larger than this are dropped.",
    )

    @model_validator(mode="after")
    def _tls_needs_files(self) -> LinkSection:
        if self.transport == "tls":
            missing = [k for k in ("ca_file", "cert_file", "key_file") if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"transport = 'tls' needs {', '.join(missing)} "
                    "(or transport = 'tcp' for a loopback broker)"
                )
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self


class KeysSection(_Section):
    """JWK Set files for sealing messages to and from the platform."""

    gateway_keys: Path = Field(
        Path("/etc/lockgw/keys/gateway.jwks"),
        description="The gateway's private Ed25519 + X25519 keys (mode 0600), made by `keys init`.",
    )
    platform_keys: Path = Field(
        Path("/etc/lockgw/keys/platform.jwks"),
        description="The platform's pinned public keys; several `kid`s allowed for rotation.",
    )


class OutboxSection(_Section):
    """The durable queue of sealed messages awaiting `sync.ack`."""

    max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024 * 1024, description="Bound on the sealed bytes kept."
    )
    warn_ratio: float = Field(
        0.8,
        gt=0,
        lt=1,
        description="Alert `outbox_near_full` when this share of the bound is used.",
    )


class BusSection(_Section):
    """One RS-485 bus of OSDP locks."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="Bus name used by doors.",
        examples=["bus0"],
    )
    port: str = Field(
        min_length=1,
        description="Serial device (a udev name such as /dev/lockgw-bus0).",
        examples=["/dev/lockgw-bus0"],
    )
    baudrate: int = Field(115200, description=f"One of {', '.join(map(str, SERIAL_BAUD_RATES))}.")
    secure_channel: bool = Field(
        True, description="OSDP secure channel with a key per lock; off only for bench testing."
    )

    @field_validator("baudrate")
    @classmethod
    def _baud(cls, value: int) -> int:
        return _check_baud(value)


_OSDP_LOCK = re.compile(r"^osdp:(?P<bus>[a-z0-9][a-z0-9_-]{0,31}):(?P<address>\d{1,3})$")
_BLE_LOCK = re.compile(
    r"^ble:(?P<family>[a-z][a-z0-9_-]{0,15}):(?P<address>[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5})$"
)


class BleSection(_Section):
    """The Bluetooth LE controller that reaches the BLE locks (`ble:` doors)."""

    transport: str | None = Field(
        None,
        description="Controller: `usb:0`, `serial:/dev/ttyACM0,1000000`, `hci-socket:0`, "
        "or `tcp-client:HOST:PORT` (simulated radio).",
        examples=["usb:0"],
    )
    max_connections: int = Field(
        3, ge=1, le=16, description="Simultaneous connections (the controller's LE slots)."
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=60, description="One connection attempt.")
    offline_after_s: float = Field(
        60.0, ge=1, le=3600, description="A lock not heard this long is offline."
    )
    poll_s: float = Field(300.0, ge=5, le=86400, description="Read every lock at least this often.")
    app_id: int = Field(
        0x4C4B4757, ge=1, le=0xFFFFFFFF, description="This gateway's app id when pairing."
    )

    @field_validator("transport")
    @classmethod
    def _transport(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_transport(value)
            except TransportSpecError as exc:
                raise ValueError(str(exc)) from None
        return value


class DoorSection(_Section):
    """A door: its lock (OSDP on a bus, or BLE), and optionally an ID reader and a camera."""

    id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
        description="Lock id as the platform names it in grants (`locks`).",
        examples=["L101"],
    )
    room: str = Field("", max_length=64, description="Room or entrance label, for records.")
    lock: str | None = Field(
        None,
        description="The lock: `osdp:<bus>:<address>` or `ble:<family>:<address>` "
        "(instead of `bus` and `address`).",
        examples=["ble:nuki:F0:00:00:00:00:01"],
    )
    bus: str = Field("", description="Name of the OSDP bus the lock hangs on.", examples=["bus0"])
    address: int = Field(
        0, ge=0, le=126, description="OSDP address of the lock on its bus.", examples=[1]
    )
    reader_port: str | None = Field(None, description="Serial device of the ID card reader.")
    reader_baudrate: int = Field(115200, description="Baud rate of the ID card reader.")
    camera: str | None = Field(
        None,
        description="V4L2 device (/dev/videoN or index), RTSP URL, video file, or "
        "`folder:DIR` for a simulated camera (a scene folder).",
    )
    qr_port: str | None = Field(
        None, description="Serial device of the QR scanner module (electronic ID codes)."
    )
    qr_baudrate: int = Field(9600, description="Baud rate of the QR scanner module.")
    qr_camera: bool = Field(
        False, description="Look for electronic ID QR codes in this door's camera frames."
    )
    unlock_seconds: int = Field(
        5, ge=1, le=25, description="How long an opening keeps it unlocked."
    )
    held_open_s: float = Field(
        30.0, ge=1, le=3600, description="Open longer than this: `held_open`."
    )

    @field_validator("reader_baudrate", "qr_baudrate")
    @classmethod
    def _baud(cls, value: int) -> int:
        return _check_baud(value)

    @model_validator(mode="before")
    @classmethod
    def _osdp_lock(cls, data: Any) -> Any:
        """``lock = "osdp:bus0:3"`` is the same as ``bus = "bus0"``, ``address = 3``."""
        if isinstance(data, dict) and isinstance(data.get("lock"), str):
            match = _OSDP_LOCK.match(data["lock"])
            if match:
                bus, address = match["bus"], int(match["address"])
                if data.get("bus", bus) != bus or data.get("address", address) != address:
                    raise ValueError(f"lock = {data['lock']!r} disagrees with bus and address")
                data = {**data, "bus": bus, "address": address}
        return data

    @model_validator(mode="after")
    def _lock_named(self) -> DoorSection:
        if self.lock is not None and not (
            _OSDP_LOCK.match(self.lock) or _BLE_LOCK.match(self.lock)
        ):
            raise ValueError(
                f"lock = {self.lock!r}: expected osdp:<bus>:<address> or ble:<family>:<address>"
            )
        if self.is_ble:
            if self.bus:
                raise ValueError(f"door {self.id!r}: a BLE lock hangs on no bus")
            if self.ble_family not in FAMILIES:
                raise ValueError(
                    f"lock = {self.lock!r}: unknown BLE lock family {self.ble_family!r} "
                    f"(known: {', '.join(sorted(FAMILIES))})"
                )
        elif not self.bus:
            raise ValueError(
                f'door {self.id!r} names no lock: set lock = "osdp:<bus>:<address>" or '
                '"ble:<family>:<address>" (or bus and address)'
            )
        return self

    @property
    def is_ble(self) -> bool:
        """True for a BLE lock."""
        return self.lock is not None and self.lock.startswith("ble:")

    @property
    def ble_family(self) -> str:
        """The lock family of a BLE lock (``nuki``)."""
        return self.lock.split(":", 2)[1] if self.is_ble and self.lock else ""

    @property
    def ble_address(self) -> str:
        """The BLE device address of a BLE lock, upper case."""
        return self.lock.split(":", 2)[2].upper() if self.is_ble and self.lock else ""

    @model_validator(mode="after")
    def _qr_camera_needs_camera(self) -> DoorSection:
        if self.qr_camera and not self.camera:
            raise ValueError(f"door {self.id!r}: qr_camera = true needs camera")
        return self


class EidSection(_Section):
    """Check-in with the electronic ID (网证): codes verified by the platform (section 6)."""

    answer_timeout_s: float = Field(
        3.0, gt=0, le=10, description="Longest wait for the platform's eid.result (at most 10 s)."
    )
    code_lifetime_s: float = Field(
        300.0, ge=10, le=3600, description="The same code read again within this is not sent."
    )
    face_wait_s: float = Field(
        1.0, gt=0, le=5, description="How long to look for the guest's face once a code is read."
    )
    camera_scan_interval_ms: int = Field(
        200, ge=50, le=5000, description="How often a door camera's frame is searched for codes."
    )


class ReadersSection(_Section):
    """ID card readers (all doors)."""

    poll_interval_ms: int = Field(100, ge=20, le=5000, description="Find-card poll period.")
    wlt_decoder: Literal["none", "command", "library"] = Field(
        "none",
        description="How card photos (WLT) are decoded: not at all, by a command, by a library.",
    )
    wlt_command: str | None = Field(
        None, description="Command reading WLT on stdin and writing BMP/PNG on stdout."
    )
    wlt_library: Path | None = Field(None, description="Vendor shared library that decodes WLT.")

    @model_validator(mode="after")
    def _decoder_target(self) -> ReadersSection:
        if self.wlt_decoder == "command" and not self.wlt_command:
            raise ValueError("wlt_decoder = 'command' needs wlt_command")
        if self.wlt_decoder == "library" and self.wlt_library is None:
            raise ValueError("wlt_decoder = 'library' needs wlt_library")
        return self


class FaceSection(_Section):
    """Face verification at the door."""

    model: Literal["mobilefacenet", "dlib"] = Field(
        "mobilefacenet",
        description="Recognition model: YuNet + MobileFaceNet (ONNX, default) or dlib ResNet.",
    )
    threshold: float | None = Field(
        None,
        gt=0,
        lt=2,
        description="Largest accepted face distance (MobileFaceNet: 1 - cosine; dlib: Euclidean);"
        " empty for the model's measured default (docs/face.md).",
    )
    models_dir: Path | None = Field(
        None,
        description="Folder of the ONNX model files and their SHA256SUMS; empty for the shipped.",
    )
    dlib_model: Path | None = Field(
        None, description="dlib only: ResNet recognition model file; empty for the bundled one."
    )
    liveness: Literal["pad", "pad+blink", "blink", "off"] = Field(
        "pad",
        description="Liveness: presentation-attack detection (MiniFASNet), plus a blink, or off.",
    )
    allow_without_liveness: bool = Field(
        False, description='Needed to set `liveness = "off"`: a printed photo then matches.'
    )
    pad_threshold: float = Field(
        0.5, gt=0, lt=1, description="Smallest mean live probability of an attempt's frames."
    )
    card_photo_reference: bool = Field(
        False,
        description="Use the card chip's photo as reference when the grant has none"
        " (trusts the reader line: docs/face.md).",
    )
    timeout_s: float = Field(2.0, gt=0, le=30, description="A verification taking longer fails.")
    attempts: int = Field(3, ge=1, le=50, description="Frames of one attempt (any match admits).")
    min_face_px: int = Field(90, ge=20, le=1000, description="Smallest usable face width.")

    @model_validator(mode="after")
    def _liveness_floor(self) -> FaceSection:
        if self.liveness == "off" and not self.allow_without_liveness:
            raise ValueError(
                "liveness = 'off' lets a printed photo of a guest match; it needs"
                " allow_without_liveness = true"
            )
        if self.liveness.startswith("pad") and self.model != "mobilefacenet":
            raise ValueError(f"liveness = {self.liveness!r} needs model = 'mobilefacenet'")
        return self


class PolicySection(_Section):
    """Site policy for the door decision."""

    offline_grace_h: float = Field(
        72.0, gt=0, le=24 * 30, description="Honour grants this long without platform contact."
    )
    reentry_requires_face: bool = Field(
        True,
        description="Re-entry by card needs the face too; the first entry always does (人证合一).",
    )
    pin_reentry: bool = Field(True, description="Allow PIN re-entry where the grant allows it.")
    pin_max_attempts: int = Field(5, ge=1, le=20, description="Wrong PINs before lockout.")
    pin_lockout_s: int = Field(
        300, ge=10, le=86400, description="Lockout after too many wrong PINs."
    )
    card_reuse_window_s: int = Field(
        10,
        ge=0,
        le=3600,
        description="One person, one door: the same card at another door this soon after an "
        "opening (or while its visit is in progress) is refused `card_in_use`; keep it shorter "
        "than the walk between two doors of one stay (entrance to room).",
    )


class AlertsSection(_Section):
    """Warning rules: which happenings become alerts to the platform (each can be switched off)."""

    identity_mismatch: bool = Field(True, description="Valid card, face of someone else.")
    unregistered_occupant: bool = Field(
        True, description="More faces pass an opened door than guests were verified (实数登记)."
    )
    door_forced: bool = Field(True, description="Door opened while locked.")
    door_held_open: bool = Field(True, description="Door open past its `held_open_s`.")
    tamper: bool = Field(True, description="A lock's tamper switch opened.")
    lock_offline: bool = Field(True, description="A lock stopped answering on its bus.")
    lock_battery_critical: bool = Field(True, description="A BLE lock's battery became critical.")
    brute_force_count: int = Field(
        5, ge=2, le=100, description="Denials at one door within the window: `brute_force`."
    )
    brute_force_window_s: int = Field(300, ge=10, le=86400, description="Window for the above.")
    unknown_card_count: int = Field(
        3, ge=2, le=100, description="A card in no grant presented this often: `unknown_card`."
    )
    unknown_card_window_s: int = Field(
        3600, ge=60, le=7 * 86400, description="Window for the above."
    )


class MetricsSection(_Section):
    """Prometheus metrics on localhost."""

    enabled: bool = Field(False, description="Serve /metrics.")
    port: int = Field(9108, ge=1, le=65535, description="Port on 127.0.0.1.")


class Config(_Section):
    """The whole gateway configuration."""

    gateway: GatewaySection
    link: LinkSection
    keys: KeysSection = Field(default_factory=KeysSection)
    outbox: OutboxSection = Field(default_factory=OutboxSection)
    readers: ReadersSection = Field(default_factory=ReadersSection)
    face: FaceSection = Field(default_factory=FaceSection)
    eid: EidSection = Field(default_factory=EidSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    alerts: AlertsSection = Field(default_factory=AlertsSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    ble: BleSection = Field(default_factory=BleSection)
    buses: list[BusSection] = Field(default_factory=list)
    doors: list[DoorSection] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        bus_names = [b.name for b in self.buses]
        _no_duplicates("buses.name", bus_names)
        _no_duplicates("buses.port", [b.port for b in self.buses])
        _no_duplicates("doors.qr_port", [d.qr_port for d in self.doors if d.qr_port])
        other_ports = {b.port for b in self.buses} | {d.reader_port for d in self.doors}
        for door in self.doors:
            if door.qr_port and door.qr_port in other_ports:
                raise ValueError(
                    f"doors: door {door.id!r} has qr_port = {door.qr_port!r}, "
                    "which is also a bus or ID reader port"
                )
        _no_duplicates("doors.id", [d.id for d in self.doors])
        osdp_doors = [d for d in self.doors if not d.is_ble]
        ble_doors = [d for d in self.doors if d.is_ble]
        _no_duplicates("doors.(bus, address)", [f"{d.bus}:{d.address}" for d in osdp_doors])
        _no_duplicates("doors.lock", [d.ble_address for d in ble_doors])
        if ble_doors and self.ble.transport is None:
            raise ValueError(
                f"doors: door {ble_doors[0].id!r} has a BLE lock but [ble] transport is not set"
            )
        for door in osdp_doors:
            if door.bus not in bus_names:
                raise ValueError(
                    f"doors: door {door.id!r} has bus = {door.bus!r}, which is not among [[buses]] "
                    f"({', '.join(bus_names) or 'none defined'})"
                )
        return self

    def door(self, door_id: str) -> DoorSection:
        """The door with this lock id."""
        for door in self.doors:
            if door.id == door_id:
                return door
        raise KeyError(door_id)

    @property
    def db_path(self) -> Path:
        """The gateway's database file."""
        return self.gateway.state_dir / "lockgw.db"


def _check_baud(value: int) -> int:
    if value not in SERIAL_BAUD_RATES:
        raise ValueError(f"expected one of {', '.join(map(str, SERIAL_BAUD_RATES))}")
    return value


def _no_duplicates(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} = {value!r} appears more than once")
        seen.add(value)


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate already-parsed TOML data; raises :class:`ConfigError`."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(err, data) for err in exc.errors()]) from None


def load_config(path: Path) -> Config:
    """Read and validate a TOML configuration file; raises :class:`ConfigError`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    return parse_config(data, str(path))


def _describe(err: Any, data: dict[str, Any]) -> str:
    """One problem as ``key = value: what was expected``."""
    loc = list(err.get("loc", ()))
    key = _dotted(loc, data)
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"{key}: unknown key (misspelt? see config/gateway.example.toml)"
    if kind == "missing":
        return f"{key}: required key is missing"
    if not loc:
        return f"configuration: {message}"
    if kind == "value_error" and isinstance(err.get("input"), dict):
        return f"{key}: {message}"
    value = err.get("input")
    return f"{key} = {_show(value)}: {message}"


def _dotted(loc: list[Any], data: dict[str, Any]) -> str:
    """``['doors', 1, 'address']`` -> ``doors[1].address`` (1-based for people: doors #2)."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        else:
            parts.append(str(item))
    return ".".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

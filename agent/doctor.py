"""``lockgw doctor``: the technician's checks, one by one, each with its fix.

Every check returns :class:`Check` values (name, OK/FAIL/SKIP, what was seen,
what to do). Checks that need live device state ask the running daemon over its
control socket; when it is not running they are skipped with that reason, and
the checks that can run alone (configuration, key files, serial ports, the
broker, the clock, the disk) still run. A check whose prerequisite failed (a
reader whose port is missing) is skipped, so one fault shows as one FAIL.

Nothing here changes state: files are only read, the database is opened
read-only, and the broker probe never opens an MQTT session (see
:func:`probe_broker`). No personal data is read or shown.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import sqlite3
import ssl
import stat
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.clock import BACKWARD_ALERT_S
from agent.config import Config, ConfigError, DoorSection, load_config
from agent.control import ControlError, call
from agent.keys import KeyFileError, fingerprint, load_gateway_keys, load_platform_keys

OK = "OK"
FAIL = "FAIL"
SKIP = "SKIP"

GIB = 1024**3
DEFAULT_MIN_FREE_BYTES = GIB
DEFAULT_MIN_FREE_RATIO = 0.05
DEFAULT_CONTACT_MAX_AGE_S = 15 * 60.0
CLOCK_MAX_BEHIND_S = BACKWARD_ALERT_S
START_DAEMON = "start it with systemctl start lockgw"

# An MQTT CONNECT naming protocol version 6, which no broker speaks: the broker
# answers CONNACK "unsupported protocol version" and closes, before it reads a
# client id or touches a session. A real CONNECT would take over the gateway's
# own session (the broker binds the client id to the certificate's CN) and
# receive its queued commands.
_PROBE_CONNECT = bytes([0x10, 10, 0, 4]) + b"MQTT" + bytes([6, 0x02, 0, 0])
_CONNACK = 0x20
_CERT_REJECTED_ALERTS = (
    "UNKNOWN_CA",
    "BAD_CERTIFICATE",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "CERTIFICATE_REQUIRED",
    "CERTIFICATE_UNKNOWN",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
    "HANDSHAKE_FAILURE",
    "DECRYPT_ERROR",
)


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: str  # OK, FAIL or SKIP
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class DoctorOptions:
    """Thresholds; ``min_free_bytes`` None means min(1 GiB, 5 % of the filesystem)."""

    min_free_bytes: int | None = None
    contact_max_age_s: float = DEFAULT_CONTACT_MAX_AGE_S
    probe_timeout_s: float = 5.0
    control_timeout_s: float = 10.0


@dataclass
class Report:
    """Every check in order; the exit code follows the README (0, 1, or 2 for the config)."""

    checks: list[Check] = field(default_factory=list)
    config_ok: bool = True

    @property
    def exit_code(self) -> int:
        if not self.config_ok:
            return 2
        return 1 if any(c.status == FAIL for c in self.checks) else 0

    def counts(self) -> dict[str, int]:
        """How many checks ended OK, FAIL and SKIP."""
        return {s: sum(c.status == s for c in self.checks) for s in (OK, FAIL, SKIP)}

    def as_dict(self) -> dict[str, Any]:
        """The report for ``--json``."""
        return {
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "checks": [asdict(c) for c in self.checks],
        }


StatusGetter = Callable[[Path, float], dict[str, Any]]


def _daemon_status(path: Path, timeout: float) -> dict[str, Any]:
    result = call(path, "status", timeout=timeout)
    if not isinstance(result, dict):
        raise ControlError("the daemon's status answer is not an object")
    return result


def run_doctor(
    config_path: Path,
    options: DoctorOptions | None = None,
    *,
    get_status: StatusGetter = _daemon_status,
    now: Callable[[], float] = time.time,
) -> Report:
    """Run every check against the configuration at ``config_path``."""
    options = options or DoctorOptions()
    report = Report()
    config_check, config = check_config(config_path)
    report.checks.append(config_check)
    if config is None:
        report.config_ok = False
        return report
    checks = report.checks
    checks.append(check_gateway_keys(config, config_path))
    checks.append(check_platform_keys(config))
    checks.append(check_state_dir(config))
    checks += check_tls_files(config, now())
    lock_key_checks, unkeyed = check_lock_keys(config)
    checks += lock_key_checks
    port_checks, bad_ports = check_serial_ports(config)
    checks += port_checks

    daemon_check, status = check_daemon(config, get_status, options.control_timeout_s)
    checks.append(daemon_check)
    no_daemon = None if status is not None else _daemon_skip_reason(daemon_check)
    checks += check_locks(config, status, no_daemon, bad_ports, unkeyed)
    checks += check_readers(config, status, no_daemon, bad_ports)
    checks += check_cameras(config, status is not None, options.probe_timeout_s)
    face = check_face(config, status, no_daemon)
    if face is not None:
        checks.append(face)

    tls_usable = not any(c.name == "tls files" and c.status == FAIL for c in checks)
    checks.append(check_broker(config, status, tls_usable, options.probe_timeout_s))
    checks.append(check_platform_contact(config, status, options.contact_max_age_s, now()))
    checks.append(check_ntp())
    checks.append(check_clock(config, status, now()))
    checks.append(check_disk(config, options.min_free_bytes))
    return report


def _daemon_skip_reason(daemon_check: Check) -> str:
    if "not running" in daemon_check.detail:
        return f"daemon not running: {START_DAEMON}"
    return f"daemon unreachable: {daemon_check.detail}"


# ------------------------------------------------------------------- config
def check_config(path: Path) -> tuple[Check, Config | None]:
    """The configuration file loads and validates."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        if exc.problems == ["file not found"]:
            fix = "create it from config/gateway.example.toml, or name the right file with --config"
        else:
            fix = "correct the keys named; `lockgw config check --config F` re-checks"
        return Check("config", FAIL, f"{path}: " + "; ".join(exc.problems), fix), None
    detail = (
        f"{path}: gateway {config.gateway.id}, {len(config.buses)} bus(es), "
        f"{len(config.doors)} door(s)"
    )
    return Check("config", OK, detail), config


# --------------------------------------------------------------------- keys
def _private_mode_problem(path: Path) -> str | None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if mode & 0o077:
        return f"{path} has mode {mode:04o}"
    return None


def check_gateway_keys(config: Config, config_path: Path) -> Check:
    """The gateway's private JWK Set: present, mode 0600, one usable key of each curve."""
    path = config.keys.gateway_keys
    if not path.exists():
        return Check(
            "gateway keys",
            FAIL,
            f"{path} does not exist",
            f"run `lockgw keys init --config {config_path}` and register the fingerprint it "
            "prints with the platform",
        )
    loose = _private_mode_problem(path)
    if loose:
        return Check(
            "gateway keys",
            FAIL,
            f"{loose}; a private key file must be readable by the service user only",
            f"chmod 600 {path}",
        )
    try:
        keys = load_gateway_keys(path)
    except KeyFileError as exc:
        return Check(
            "gateway keys",
            FAIL,
            str(exc),
            "restore the file from backup; if it is lost, run `lockgw keys init --force` and "
            "register the new fingerprint with the platform",
        )
    return Check("gateway keys", OK, f"{path}: {fingerprint(keys.public_set)}, mode 0600")


def check_platform_keys(config: Config) -> Check:
    """The platform's pinned public JWK Set."""
    path = config.keys.platform_keys
    fix = f"install the platform's public key set (platform.jwks) from the operator at {path}"
    if not path.exists():
        return Check("platform keys", FAIL, f"{path} does not exist", fix)
    try:
        keys = load_platform_keys(path)
    except KeyFileError as exc:
        return Check("platform keys", FAIL, str(exc), fix)
    return Check("platform keys", OK, f"{path}: {fingerprint(keys.public_set)}")


def check_state_dir(config: Config) -> Check:
    """The state directory (mode 0700) and its local key (32 bytes, mode 0600)."""
    state = config.gateway.state_dir
    if not state.exists():
        return Check(
            "state dir",
            OK,
            f"{state} does not exist yet; the daemon makes it (0700) at first start",
        )
    if not state.is_dir():
        return Check("state dir", FAIL, f"{state} is not a directory", "fix gateway.state_dir")
    mode = stat.S_IMODE(state.stat().st_mode)
    if mode & 0o077:
        return Check(
            "state dir",
            FAIL,
            f"{state} has mode {mode:04o}; it holds sealed keys and the database",
            f"chmod 700 {state}",
        )
    if not os.access(state, os.R_OK | os.W_OK | os.X_OK):
        return Check(
            "state dir",
            FAIL,
            f"{state} is not writable by this user",
            f"run doctor as the service user, or chown lockgw {state}",
        )
    local = state / "local.key"
    if not local.exists():
        return Check("state dir", OK, f"{state}: mode 0700, local key not made yet")
    loose = _private_mode_problem(local)
    if loose:
        return Check("state dir", FAIL, loose, f"chmod 600 {local}")
    try:
        size = local.stat().st_size
    except OSError as exc:
        return Check("state dir", FAIL, f"{local}: {exc.strerror}", "run as the service user")
    if size != 32:
        return Check(
            "state dir",
            FAIL,
            f"{local} holds {size} bytes, not 32: sealed data under it cannot be opened",
            "restore local.key from backup (a new one makes the sealed lock keys unreadable)",
        )
    return Check("state dir", OK, f"{state}: mode 0700, local key mode 0600")


def check_tls_files(config: Config, now: float) -> list[Check]:
    """The broker CA, the client certificate (dates) and its key (mode 0600, matching)."""
    link = config.link
    if link.transport != "tls":
        return []
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca, cert_path, key_path = link.ca_file, link.cert_file, link.key_file
    assert ca is not None and cert_path is not None and key_path is not None
    fix_files = "install the files the platform operator issued for this gateway"
    for path in (ca, cert_path, key_path):
        if not path.exists():
            return [Check("tls files", FAIL, f"{path} does not exist", fix_files)]
        if not os.access(path, os.R_OK):
            return [
                Check("tls files", FAIL, f"{path} is not readable by this user", f"chown {path}")
            ]
    loose = _private_mode_problem(key_path)
    if loose:
        return [Check("tls files", FAIL, f"{loose} (the TLS private key)", f"chmod 600 {key_path}")]
    try:
        x509.load_pem_x509_certificates(ca.read_bytes())
    except ValueError:
        return [Check("tls files", FAIL, f"{ca} holds no PEM certificate", fix_files)]
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return [Check("tls files", FAIL, f"{cert_path} is not a PEM certificate", fix_files)]
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        return [
            Check(
                "tls files",
                FAIL,
                f"{key_path} is not an unencrypted PEM private key",
                fix_files,
            )
        ]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, pub) != key.public_key().public_bytes(der, pub):
        return [
            Check(
                "tls files",
                FAIL,
                f"{key_path} is not the key of the certificate {cert_path}",
                "install the key that belongs to this certificate (they are issued together)",
            )
        ]
    about = describe_certificate(cert_path)
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    if cert.not_valid_after_utc <= moment:
        return [
            Check(
                "tls files",
                FAIL,
                f"client certificate expired: {about}",
                "ask the platform operator for a renewed certificate and install it",
            )
        ]
    if cert.not_valid_before_utc > moment:
        return [
            Check(
                "tls files",
                FAIL,
                f"client certificate not valid yet: {about}",
                "check the system clock (see the clock checks), or wait for its start date",
            )
        ]
    left = (cert.not_valid_after_utc - moment).total_seconds()
    return [Check("tls files", OK, f"{about}; {_age(left)} left, key mode 0600")]


def describe_certificate(path: Path) -> str:
    """``CN=… issued by CN=…, valid until …`` for a PEM certificate, or why not."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return f"{path} (unreadable)"
    return (
        f"{path} ({cert.subject.rfc4514_string()} issued by {cert.issuer.rfc4514_string()}, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
    )


def _keyset_fix(config: Config, bus_name: str, address: int) -> str:
    bus = next(b for b in config.buses if b.name == bus_name)
    return (
        "stop the daemon (systemctl stop lockgw), put the lock in install mode (factory reset), "
        f"run `lockgw locks keyset {address} --install --port {bus.port} --bus {bus.name} "
        f"--state-dir {config.gateway.state_dir}`, start the daemon"
    )


def check_lock_keys(config: Config) -> tuple[list[Check], set[tuple[str, int]]]:
    """Each secure-channel bus: every lock on it has a key in the sealed store that opens."""
    from agent.lockkeys import LockKeyError, LockKeyStore
    from agent.secretbox import SecretBox, SecretBoxError

    checks: list[Check] = []
    unkeyed: set[tuple[str, int]] = set()
    local = config.gateway.state_dir / "local.key"
    box: SecretBox | None = None
    box_error = ""
    if local.exists():
        try:
            box = SecretBox.load_or_create(local)  # exists: only read
        except (OSError, SecretBoxError) as exc:
            box_error = str(exc)
    else:
        box_error = f"{local} does not exist"
    for bus in config.buses:
        doors = [d for d in config.doors if d.bus == bus.name]
        if not bus.secure_channel or not doors:
            continue
        name = f"lock keys {bus.name}"
        if box is None:
            unkeyed |= {(bus.name, d.address) for d in doors}
            first = doors[0].address
            checks.append(
                Check(
                    name, FAIL, f"no local key ({box_error})", _keyset_fix(config, bus.name, first)
                )
            )
            continue
        store = LockKeyStore(config.gateway.state_dir, box)
        missing: list[DoorSection] = []
        broken: list[str] = []
        for door in doors:
            try:
                if store.get(bus.name, door.address) is None:
                    missing.append(door)
            except LockKeyError as exc:
                broken.append(str(exc))
                missing.append(door)
        unkeyed |= {(bus.name, d.address) for d in missing}
        if missing:
            which = ", ".join(f"{d.id} (address {d.address})" for d in missing)
            detail = f"no usable secure-channel key for {which}"
            if broken:
                detail += f": {broken[0]}"
            checks.append(
                Check(name, FAIL, detail, _keyset_fix(config, bus.name, missing[0].address))
            )
        else:
            checks.append(Check(name, OK, f"{len(doors)} lock(s) keyed in {store.path}"))
    return checks, unkeyed


# ------------------------------------------------------------- serial ports
def _port_owner_group(path: Path) -> str:
    try:
        import grp

        return grp.getgrgid(path.stat().st_gid).gr_name
    except (KeyError, OSError):
        return "the port's group"


def check_port(name: str, port: str, what: str) -> Check:
    """One serial device: present, a character device, readable and writable by us."""
    path = Path(port)
    if not path.exists():
        dangling = path.is_symlink()
        detail = f"{port} is missing" + (" (its link points nowhere)" if dangling else "")
        return Check(
            name,
            FAIL,
            f"{detail}: the {what} is unplugged or its adapter was not recognised",
            f"plug the {what} in (check the USB cable and adapter); the udev rule in "
            f"config/udev must name it {port}",
        )
    mode = path.stat().st_mode
    if not stat.S_ISCHR(mode):
        return Check(
            name,
            FAIL,
            f"{port} is not a serial device",
            "point the configuration at the device the udev rule creates",
        )
    if not os.access(path, os.R_OK | os.W_OK):
        group = _port_owner_group(path)
        return Check(
            name,
            FAIL,
            f"{port} is not readable and writable by this user",
            f"add the service user to the group {group} (usermod -aG {group} lockgw) and restart",
        )
    return Check(name, OK, f"{port} present and accessible")


def check_serial_ports(config: Config) -> tuple[list[Check], set[str]]:
    """Every bus port and reader port; returns the checks and the ports that failed."""
    checks: list[Check] = []
    bad: set[str] = set()
    for bus in config.buses:
        if any(d.bus == bus.name for d in config.doors):
            checks.append(check_port(f"port {bus.name}", bus.port, "RS-485 adapter"))
            if checks[-1].status == FAIL:
                bad.add(bus.port)
    for door in config.doors:
        if door.reader_port:
            checks.append(check_port(f"port reader {door.id}", door.reader_port, "ID reader"))
            if checks[-1].status == FAIL:
                bad.add(door.reader_port)
    return checks, bad


# ------------------------------------------------------------------ daemon
def check_daemon(
    config: Config, get_status: StatusGetter, timeout: float
) -> tuple[Check, dict[str, Any] | None]:
    """The daemon answers on its control socket; its live status."""
    path = config.gateway.control_socket
    try:
        status = get_status(path, timeout)
    except ControlError as exc:
        text = str(exc)
        if "not running" in text:
            fix = f"{START_DAEMON}; journalctl -u lockgw shows why it stopped"
        elif "permission" in text:
            fix = "run doctor as root or as a member of the lockgw group"
        else:
            fix = "the daemon is stuck: journalctl -u lockgw, then systemctl restart lockgw"
        return Check("daemon", FAIL, text, fix), None
    stale = (status.get("daemon") or {}).get("stale_loops") or []
    if stale:
        return (
            Check(
                "daemon",
                FAIL,
                f"running but these loops stopped beating: {', '.join(map(str, stale))}",
                "systemctl restart lockgw; report the journal (journalctl -u lockgw)",
            ),
            status,
        )
    uptime = status.get("uptime_s", 0)
    return Check("daemon", OK, f"running {status.get('version', '')}, up {uptime:.0f} s"), status


def check_locks(
    config: Config,
    status: dict[str, Any] | None,
    no_daemon: str | None,
    bad_ports: set[str],
    unkeyed: set[tuple[str, int]],
) -> list[Check]:
    """Each door's lock: answering, and in secure channel (no key mismatch)."""
    checks: list[Check] = []
    buses = {b.name: b for b in config.buses}
    for door in config.doors:
        name = f"lock {door.id}"
        bus = buses[door.bus]
        where = f"{bus.name} address {door.address}"
        if bus.port in bad_ports:
            checks.append(Check(name, SKIP, f"{where}: its bus port failed (see port {bus.name})"))
            continue
        if (bus.name, door.address) in unkeyed:
            checks.append(Check(name, SKIP, f"{where}: it has no key (see lock keys {bus.name})"))
            continue
        if status is None:
            checks.append(Check(name, SKIP, str(no_daemon)))
            continue
        entries = (status.get("locks") or {}).get(bus.name) or []
        entry = next((e for e in entries if e.get("address") == door.address), None)
        if entry is None:
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{where}: not driven by the daemon",
                    "restart the daemon after fixing the configuration or keys; see its journal",
                )
            )
        elif entry.get("key_mismatch"):
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{where}: the lock refuses the gateway's secure-channel key "
                    "(wrong key: replaced or re-keyed lock)",
                    _keyset_fix(config, bus.name, door.address),
                )
            )
        elif not entry.get("online"):
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{where}: not answering",
                    "check the lock's power, the RS-485 wiring (A/B, termination) and that its "
                    f"address is set to {door.address}",
                )
            )
        elif not bus.secure_channel:
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{where}: answering, but secure channel is off for {bus.name} (bench mode)",
                    f"set secure_channel = true for bus {bus.name} and key each lock "
                    "(docs/locks.md)",
                )
            )
        elif not entry.get("secure_channel"):
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{where}: answering without an active secure channel",
                    "power-cycle the lock; if it persists re-key it (docs/locks.md)",
                )
            )
        else:
            checks.append(Check(name, OK, f"{where}: online, secure channel active"))
    return checks


def check_readers(
    config: Config, status: dict[str, Any] | None, no_daemon: str | None, bad_ports: set[str]
) -> list[Check]:
    """Each door's ID reader: connected and its SAM id read."""
    checks: list[Check] = []
    for door in config.doors:
        if not door.reader_port:
            continue
        name = f"reader {door.id}"
        if door.reader_port in bad_ports:
            checks.append(Check(name, SKIP, f"its port failed (see port reader {door.id})"))
            continue
        if status is None:
            checks.append(Check(name, SKIP, str(no_daemon)))
            continue
        entry = (status.get("readers") or {}).get(door.id)
        if entry is None:
            checks.append(
                Check(name, FAIL, "not driven by the daemon", "restart the daemon; see its journal")
            )
            continue
        state, sam = entry.get("state"), entry.get("sam_id")
        if state in ("connected", "recovered") and sam:
            checks.append(Check(name, OK, f"answering, SAM id {sam}"))
        elif state in ("connected", "recovered"):
            checks.append(
                Check(
                    name,
                    FAIL,
                    "answering, but its SAM id could not be read",
                    "power-cycle the reader; if it persists its SAM module is faulty (replace it)",
                )
            )
        elif state in ("port_lost", "port_unavailable"):
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"the daemon cannot use {door.reader_port} ({state})",
                    "replug the reader; if the port is held by another program, stop that program",
                )
            )
        elif state == "sam_error":
            checks.append(
                Check(
                    name,
                    FAIL,
                    "the reader reports a SAM error",
                    "power-cycle the reader; if it persists replace it (its SAM is faulty)",
                )
            )
        else:
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"not answering ({state})",
                    f"check the reader's power and that it runs at {door.reader_baudrate} baud",
                )
            )
    return checks


# ------------------------------------------------------------------ cameras
def check_cameras(config: Config, daemon_running: bool, timeout: float) -> list[Check]:
    """Each door's camera gives a frame (a simulated scene folder: the folder is there)."""
    checks = []
    for door in config.doors:
        if door.camera:
            checks.append(check_camera(door, daemon_running, timeout))
    return checks


def check_camera(door: DoorSection, daemon_running: bool, timeout: float) -> Check:
    """Grab one frame from a door's camera (V4L2, RTSP or file through OpenCV)."""
    name = f"camera {door.id}"
    spec = door.camera or ""
    if spec.startswith("folder:"):
        folder = Path(spec.removeprefix("folder:"))
        if not folder.is_dir() or not os.access(folder, os.R_OK | os.X_OK):
            return Check(
                name,
                FAIL,
                f"scene folder {folder} is missing or unreadable",
                "start the simulated building, or fix the door's camera setting",
            )
        return Check(name, OK, f"simulated camera: scene folder {folder} present")
    from drivers.camera.sources import describe, open_capture

    source: int | str = int(spec) if spec.isdigit() else spec
    label = describe(source)
    if isinstance(source, str) and source.startswith("/dev/") and not Path(source).exists():
        return Check(
            name,
            FAIL,
            f"{source} does not exist",
            "check the camera's USB cable; `v4l2-ctl --list-devices` lists cameras",
        )
    deadline = time.monotonic() + timeout
    cap = open_capture(source, open_timeout_s=timeout)
    try:
        while cap.isOpened() and time.monotonic() < deadline:
            ok, frame = cap.read()
            if ok and frame is not None and frame.size:
                h, w = frame.shape[:2]
                return Check(name, OK, f"{label}: frame {w}x{h}")
            time.sleep(0.1)
    finally:
        cap.release()
    busy = daemon_running and not (isinstance(source, str) and "://" in source)
    hint = " (the running daemon may hold the device: stop it to test)" if busy else ""
    return Check(
        name,
        FAIL,
        f"{label}: no frame within {timeout:g} s{hint}",
        "check the camera's power and cable or network; for a stream, its URL and credentials",
    )


def check_face(
    config: Config, status: dict[str, Any] | None, no_daemon: str | None
) -> Check | None:
    """The face worker is ready (only when doors have cameras)."""
    if not any(d.camera for d in config.doors):
        return None
    if status is None:
        return Check("face", SKIP, str(no_daemon))
    face = status.get("face")
    if not face:
        return Check("face", FAIL, "the daemon runs no face worker", "see journalctl -u lockgw")
    if not face.get("ready"):
        return Check(
            "face",
            FAIL,
            "the face worker is not ready",
            "see journalctl -u lockgw: the recognition model (face.model) may be missing",
        )
    return Check("face", OK, f"worker ready ({face.get('requests', 0)} request(s) so far)")


# ------------------------------------------------------------------- broker
@dataclass(frozen=True)
class ProbeResult:
    """What :func:`probe_broker` found."""

    ok: bool
    detail: str
    fix: str = ""
    cert_rejected: bool = False


def tls_context(config: Config) -> ssl.SSLContext:
    """The TLS context the daemon's link uses (CA, client certificate, TLS >= 1.2)."""
    link = config.link
    ctx = ssl.create_default_context(cafile=str(link.ca_file) if link.ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if link.cert_file is not None:
        ctx.load_cert_chain(str(link.cert_file), str(link.key_file) if link.key_file else None)
    return ctx


def probe_broker(
    host: str, port: int, ctx: ssl.SSLContext | None, timeout: float, cert_about: str = ""
) -> ProbeResult:
    """Reach the broker, do the TLS handshake, and get an MQTT answer without a session.

    The probe sends a CONNECT with an unsupported protocol version (see
    ``_PROBE_CONNECT``): a broker answers with CONNACK and closes, after it has
    checked the client certificate (in TLS 1.3 that check ends after the
    handshake, so a rejection shows as the connection closing before CONNACK).
    """
    where = f"{host}:{port}"
    net_fix = f"check the broker is running at {where} ([link] host, port) and the network path"
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        return ProbeResult(
            False, f"cannot resolve {host}: {exc.strerror}", "check DNS and [link] host"
        )
    except ConnectionRefusedError:
        return ProbeResult(
            False, f"nothing accepts connections at {where}: the broker is down", net_fix
        )
    except TimeoutError:
        return ProbeResult(False, f"no answer from {where} within {timeout:g} s", net_fix)
    except OSError as exc:
        return ProbeResult(False, f"cannot connect to {where}: {exc.strerror or exc}", net_fix)
    rejected_fix = (
        f"the broker does not accept this gateway's client certificate {cert_about}: install "
        "the certificate the platform's CA issued for this gateway, or ask the operator to "
        "renew it or trust its issuer"
    )
    sock: socket.socket = raw
    version = "plain TCP"
    try:
        raw.settimeout(timeout)
        if ctx is not None:
            try:
                sock = ctx.wrap_socket(raw, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                return ProbeResult(
                    False,
                    f"the broker's certificate is not trusted: {exc.verify_message}",
                    "ca_file must hold the CA that signed the broker's certificate, and [link] "
                    "host must match a name in it",
                )
            except ssl.SSLError as exc:
                reason = str(exc.reason or exc)
                if any(alert in reason.upper() for alert in _CERT_REJECTED_ALERTS):
                    return ProbeResult(
                        False,
                        f"the broker rejected the client certificate ({reason})",
                        rejected_fix,
                        cert_rejected=True,
                    )
                return ProbeResult(False, f"TLS handshake with {where} failed: {reason}", net_fix)
            except (ConnectionError, TimeoutError) as exc:
                return ProbeResult(False, f"TLS handshake with {where} failed: {exc}", net_fix)
            version = str(getattr(sock, "version", lambda: "TLS")() or "TLS")
        try:
            sock.sendall(_PROBE_CONNECT)
            answer = sock.recv(4)
        except ssl.SSLError as exc:
            reason = str(exc.reason or exc)
            return ProbeResult(
                False,
                f"the broker closed the {version} session after the handshake ({reason}): "
                "it rejected the client certificate",
                rejected_fix,
                cert_rejected=True,
            )
        except TimeoutError:
            return ProbeResult(
                False,
                f"{where} accepted the connection but gave no MQTT answer within {timeout:g} s",
                net_fix,
            )
        except ConnectionError:
            answer = b""
    finally:
        sock.close()
    if not answer:
        if ctx is not None and version == "TLSv1.3":
            return ProbeResult(
                False,
                "the broker closed the TLSv1.3 session right after the handshake: "
                "it rejected the client certificate",
                rejected_fix,
                cert_rejected=True,
            )
        return ProbeResult(
            False,
            f"{where} closed the connection without an MQTT answer: the broker is down behind "
            "it, or it is not an MQTT broker",
            net_fix,
        )
    if answer[0] != _CONNACK:
        return ProbeResult(
            False, f"{where} is not an MQTT broker (answered {answer.hex()})", net_fix
        )
    accepted = ", client certificate accepted" if ctx is not None else ""
    return ProbeResult(True, f"MQTT broker answers at {where} over {version}{accepted}")


def check_broker(
    config: Config, status: dict[str, Any] | None, tls_usable: bool, timeout: float
) -> Check:
    """The broker answers (TLS, certificate accepted) and the daemon's link is up."""
    link = config.link
    ctx: ssl.SSLContext | None = None
    about = ""
    if link.transport == "tls":
        if not tls_usable:
            return Check("broker", SKIP, "the TLS files are unusable (see tls files)")
        try:
            ctx = tls_context(config)
        except (OSError, ssl.SSLError) as exc:
            return Check(
                "broker",
                FAIL,
                f"cannot load the TLS files: {exc}",
                "install the CA, certificate and key issued for this gateway",
            )
        assert link.cert_file is not None
        about = describe_certificate(link.cert_file)
    result = probe_broker(link.host, link.port, ctx, timeout, about)
    connected = None if status is None else bool((status.get("link") or {}).get("connected"))
    if not result.ok:
        extra = "; the daemon's link is down too" if connected is False else ""
        return Check("broker", FAIL, result.detail + extra, result.fix)
    if connected is False:
        return Check(
            "broker",
            FAIL,
            f"{result.detail}, but the daemon's link is not connected",
            "see journalctl -u lockgw for the link's errors (it reconnects by itself within "
            f"{link.reconnect_max_s:g} s once the cause is gone)",
        )
    suffix = "; the daemon is connected" if connected else ""
    return Check("broker", OK, result.detail + suffix)


# ------------------------------------------------------- platform and clock
def _read_db(
    config: Config, query: str, params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]] | None:
    """Rows of a read-only query on the gateway's database, or None if it cannot be read."""
    path = config.db_path
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error:
        return None
    try:
        return list(conn.execute(query, params).fetchall())
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _meta(config: Config, key: str) -> float | None:
    rows = _read_db(config, "SELECT value FROM meta WHERE key = ?", (key,))
    if not rows:
        return None
    try:
        return float(rows[0][0])
    except (TypeError, ValueError):
        return None


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def check_platform_contact(
    config: Config, status: dict[str, Any] | None, max_age_s: float, now: float
) -> Check:
    """The platform has been heard from (any verified command, sync.ack included) recently.

    ``ping`` goes from the platform to the gateway, so the gateway cannot send
    one; a recent verified command shows the platform reaches this gateway.
    """
    if status is not None:
        last = (status.get("clock") or {}).get("last_contact")
        source = "daemon"
    else:
        last = _meta(config, "platform_last_contact")
        source = "database"
    fix_registered = (
        "check the gateway is registered at the platform (`lockgw keys show` gives the "
        "fingerprint) and that the platform pings it; check the broker check above"
    )
    if last is None:
        if status is None and not config.db_path.exists():
            return Check("platform contact", SKIP, "no database yet: the daemon has never run")
        return Check(
            "platform contact", FAIL, "the platform has never been heard from", fix_registered
        )
    age = max(0.0, now - float(last))
    if age > max_age_s:
        return Check(
            "platform contact",
            FAIL,
            f"the platform has not sent anything for {_age(age)} (limit {_age(max_age_s)})",
            fix_registered,
        )
    return Check("platform contact", OK, f"last verified command {_age(age)} ago ({source})")


def check_ntp(run: Callable[..., Any] = subprocess.run) -> Check:
    """``timedatectl show -p NTPSynchronized``: yes is OK; skipped where it is unusable."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return Check("clock sync", SKIP, "timedatectl is not installed (no systemd)")
    try:
        done = run(
            [exe, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("clock sync", SKIP, f"timedatectl did not answer: {exc}")
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[0]
        return Check("clock sync", SKIP, f"timedatectl is not usable here: {why}")
    value = done.stdout.strip()
    if value == "yes":
        return Check("clock sync", OK, "NTP synchronised")
    return Check(
        "clock sync",
        FAIL,
        f"NTP not synchronised (NTPSynchronized={value or '?'})",
        "timedatectl set-ntp true; make sure chrony or systemd-timesyncd reaches its servers "
        "(UDP 123)",
    )


def check_clock(config: Config, status: dict[str, Any] | None, now: float) -> Check:
    """The system clock against trusted time (platform-signed ``ts``) and command ``exp``."""
    if status is not None:
        behind = float((status.get("clock") or {}).get("system_behind_s") or 0.0)
        source = "daemon"
    else:
        mark = _meta(config, "clock_high_water")
        if mark is None:
            return Check("clock", SKIP, "no trusted time recorded yet (the daemon has not run)")
        behind = max(0.0, mark - now)
        source = "database"
    fix_clock = (
        "set the clock right: check NTP (timedatectl status, chronyc sources); grants are "
        "judged by the later, trusted time meanwhile"
    )
    if behind > CLOCK_MAX_BEHIND_S:
        return Check(
            "clock",
            FAIL,
            f"system clock is {behind:.0f} s behind trusted time (the platform's signed ts)",
            fix_clock,
        )
    rows = _read_db(
        config,
        "SELECT type, exp, received_at FROM link_commands ORDER BY received_at DESC LIMIT 1",
    )
    if rows:
        kind, exp, received = rows[0]
        late = float(received) - float(exp)
        if late > 0:
            return Check(
                "clock",
                FAIL,
                f"the platform's last command ({kind}) arrived {late:.0f} s past its exp by this "
                "clock: the system clock is ahead of the platform's (or the command waited that "
                "long at the broker)",
                fix_clock,
            )
    return Check("clock", OK, f"system clock {behind:.0f} s behind trusted time ({source})")


# --------------------------------------------------------------------- disk
def _existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_disk(config: Config, min_free: int | None) -> Check:
    """Free space on the state directory's filesystem above the threshold."""
    where = _existing(config.gateway.state_dir)
    usage = shutil.disk_usage(where)
    threshold = (
        min_free
        if min_free is not None
        else int(min(DEFAULT_MIN_FREE_BYTES, usage.total * DEFAULT_MIN_FREE_RATIO))
    )
    detail = (
        f"{format_bytes(usage.free)} free of {format_bytes(usage.total)} at {where} "
        f"(needs {format_bytes(threshold)})"
    )
    if usage.free < threshold:
        return Check(
            "disk",
            FAIL,
            f"disk nearly full: {detail}",
            "free space (journalctl --vacuum-size=100M, remove old files) or grow the disk; "
            "the outbox keeps records here while the link is down",
        )
    return Check("disk", OK, detail)


def summary_line(checks: Iterable[Check]) -> str:
    """``17 OK, 1 FAIL, 2 SKIP``."""
    items = list(checks)
    counts = {s: sum(c.status == s for c in items) for s in (OK, FAIL, SKIP)}
    return ", ".join(f"{n} {s}" for s, n in counts.items())

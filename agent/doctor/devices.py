"""Devices at the doors: serial ports, ID readers, cameras and the face worker."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

from agent.config.schema import Config, DoorSection
from agent.doctor.report import FAIL, OK, SKIP, Check


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


# ------------------------------------------------------------------ readers
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
    from agent.devices.cameras import parse_camera_spec

    try:
        spec = parse_camera_spec(door.camera or "")
    except ValueError as exc:
        return Check(name, FAIL, str(exc), "fix the door's camera setting")
    if spec.folder is not None:
        folder = spec.folder
        if not folder.is_dir() or not os.access(folder, os.R_OK | os.X_OK):
            return Check(
                name,
                FAIL,
                f"scene folder {folder} is missing or unreadable",
                "start the simulated building, or fix the door's camera setting",
            )
        return Check(name, OK, f"simulated camera: scene folder {folder} present")
    from drivers.camera.sources import open_capture

    source = spec.source
    label = spec.label
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

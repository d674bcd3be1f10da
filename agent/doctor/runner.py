"""``run_doctor``: the thresholds and the order of the checks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.doctor.ble import check_ble
from agent.doctor.broker import check_broker
from agent.doctor.clock import check_clock, check_ntp, check_platform_contact
from agent.doctor.daemon import StatusGetter, check_daemon, daemon_skip_reason, daemon_status
from agent.doctor.devices import check_cameras, check_face, check_readers, check_serial_ports
from agent.doctor.disk import check_disk
from agent.doctor.face import check_face_models
from agent.doctor.files import (
    check_config,
    check_gateway_keys,
    check_key_files,
    check_platform_keys,
    check_state_dir,
    check_tls_files,
)
from agent.doctor.locks import check_lock_keys, check_locks
from agent.doctor.report import FAIL, Report

DEFAULT_CONTACT_MAX_AGE_S = 15 * 60.0


@dataclass(frozen=True)
class DoctorOptions:
    """Thresholds; ``min_free_bytes`` None means min(1 GiB, 5 % of the filesystem)."""

    min_free_bytes: int | None = None
    contact_max_age_s: float = DEFAULT_CONTACT_MAX_AGE_S
    probe_timeout_s: float = 5.0
    control_timeout_s: float = 10.0


def run_doctor(
    config_path: Path,
    options: DoctorOptions | None = None,
    *,
    get_status: StatusGetter = daemon_status,
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
    checks.append(check_key_files(config))
    checks += check_tls_files(config, now())
    lock_key_checks, unkeyed = check_lock_keys(config)
    checks += lock_key_checks
    port_checks, bad_ports = check_serial_ports(config)
    checks += port_checks

    daemon_check, status = check_daemon(config, get_status, options.control_timeout_s)
    checks.append(daemon_check)
    no_daemon = None if status is not None else daemon_skip_reason(daemon_check)
    checks += check_locks(config, status, no_daemon, bad_ports, unkeyed)
    checks += check_ble(config, status, no_daemon, options.probe_timeout_s)
    checks += check_readers(config, status, no_daemon, bad_ports)
    checks += check_cameras(config, status is not None, options.probe_timeout_s)
    checks += check_face_models(config)
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

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

The checks live in one module per family (files, locks, devices, broker,
clock, disk, daemon, face); :mod:`agent.doctor.runner` runs them in order.
"""

from agent.doctor.broker import ProbeResult, check_broker, probe_broker, tls_context
from agent.doctor.clock import CLOCK_MAX_BEHIND_S, check_clock, check_ntp, check_platform_contact
from agent.doctor.daemon import START_DAEMON, StatusGetter, check_daemon, daemon_status
from agent.doctor.devices import (
    check_camera,
    check_cameras,
    check_face,
    check_port,
    check_readers,
    check_serial_ports,
)
from agent.doctor.disk import (
    DEFAULT_MIN_FREE_BYTES,
    DEFAULT_MIN_FREE_RATIO,
    GIB,
    check_disk,
    format_bytes,
)
from agent.doctor.face import check_face_models
from agent.doctor.files import (
    check_config,
    check_gateway_keys,
    check_key_files,
    check_platform_keys,
    check_state_dir,
    check_tls_files,
    describe_certificate,
)
from agent.doctor.locks import check_lock_keys, check_locks
from agent.doctor.report import FAIL, OK, SKIP, WARN, Check, Report, format_age, summary_line
from agent.doctor.runner import DEFAULT_CONTACT_MAX_AGE_S, DoctorOptions, run_doctor

__all__ = [
    "CLOCK_MAX_BEHIND_S",
    "DEFAULT_CONTACT_MAX_AGE_S",
    "DEFAULT_MIN_FREE_BYTES",
    "DEFAULT_MIN_FREE_RATIO",
    "FAIL",
    "GIB",
    "OK",
    "SKIP",
    "START_DAEMON",
    "WARN",
    "Check",
    "DoctorOptions",
    "ProbeResult",
    "Report",
    "StatusGetter",
    "check_broker",
    "check_camera",
    "check_cameras",
    "check_clock",
    "check_config",
    "check_daemon",
    "check_disk",
    "check_face",
    "check_face_models",
    "check_gateway_keys",
    "check_key_files",
    "check_lock_keys",
    "check_locks",
    "check_ntp",
    "check_platform_contact",
    "check_platform_keys",
    "check_port",
    "check_readers",
    "check_serial_ports",
    "check_state_dir",
    "check_tls_files",
    "daemon_status",
    "describe_certificate",
    "format_age",
    "format_bytes",
    "probe_broker",
    "run_doctor",
    "summary_line",
    "tls_context",
]

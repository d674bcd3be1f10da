"""``lockgw doctor`` run as a technician runs it, against the simulated building.

One building (two doors, secure channel, the link over TLS with a client
certificate) serves the module; each test injects one fault, checks that the
doctor reports exactly that fault with its fix, and undoes the fault. The
clock-behind test runs last: trusted time never goes back, so it cannot be
undone. The tests without the building run the doctor on configurations
written in a temporary directory, with no daemon running.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import firmware_sim.platform as platform_module
from tests.support.doctor import TlsSite, doctor_json, failures, run_doctor
from tests.support.mqtt import have_mosquitto, port_open

needs_mosquitto = pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSite]:
    if not have_mosquitto():
        pytest.skip("mosquitto is not installed")
    tls_site = TlsSite(tmp_path_factory.mktemp("doctor-site")).start()
    settled = tls_site.wait_status(
        lambda s: (
            all(e["online"] and e["secure_channel"] for e in s["locks"]["bus0"])
            and all(r["state"] in ("connected", "recovered") for r in s["readers"].values())
        )
    )
    if not settled:
        tls_site.close()
        pytest.fail("the simulated building's locks and readers did not come up")
    yield tls_site
    tls_site.close()


def only_failure(checks: dict[str, dict[str, str]], name: str) -> dict[str, str]:
    """The one failed check, which must be ``name``."""
    assert failures(checks) == [name], {n: checks[n] for n in failures(checks)}
    return checks[name]


def platform_clock_offset(monkeypatch: pytest.MonkeyPatch, offset_s: float) -> None:
    """Make the platform simulator's clock run ``offset_s`` seconds off (its ``ts`` and ``exp``)."""
    real = platform_module._now_iso
    monkeypatch.setattr(platform_module, "_now_iso", lambda delta_s=0.0: real(delta_s + offset_s))


# ------------------------------------------------------------ the building
def test_all_ok_against_the_simulated_building(site: TlsSite) -> None:
    code, checks = doctor_json(site.config_path)
    assert code == 0, failures(checks)
    expected = {
        "config",
        "gateway keys",
        "platform keys",
        "state dir",
        "key files",
        "tls files",
        "lock keys bus0",
        "port bus0",
        "port reader L101",
        "port reader L102",
        "daemon",
        "lock L101",
        "lock L102",
        "reader L101",
        "reader L102",
        "camera L101",
        "camera L102",
        "face models",
        "face liveness",
        "face",
        "broker",
        "platform contact",
        "clock sync",
        "clock",
        "disk",
    }
    assert set(checks) == expected
    not_ok = {n: c for n, c in checks.items() if c["status"] != "OK"}
    # NTP state can only be read where systemd runs; everything else must be OK.
    assert set(not_ok) <= {"clock sync"}, not_ok
    assert "client certificate accepted" in checks["broker"]["detail"]
    assert "secure channel active" in checks["lock L101"]["detail"]
    assert "SAM id" in checks["reader L102"]["detail"]

    plain = run_doctor(site.config_path)
    assert plain.returncode == 0
    lines = plain.stdout.splitlines()
    assert lines[-1].startswith("doctor: all checks passed")
    assert any(line.startswith("OK    broker") for line in lines)


def test_disk_nearly_full(site: TlsSite) -> None:
    free = shutil.disk_usage(site.site.building.state_dir).free
    code, checks = doctor_json(site.config_path, "--min-free", str(free + 2**30))
    assert code == 1
    disk = only_failure(checks, "disk")
    assert disk["detail"].startswith("disk nearly full:")
    assert "free space" in disk["fix"]


def test_reader_unplugged(site: TlsSite) -> None:
    reader = site.site.building.reader("L102")
    reader.unplug()
    try:
        plain = run_doctor(site.config_path)
        assert plain.returncode == 1
        line = next(x for x in plain.stdout.splitlines() if x.startswith("FAIL"))
        assert "port reader L102" in line and "is missing" in line
        assert "fix: plug the ID reader in" in line
        code, checks = doctor_json(site.config_path)
        assert code == 1
        only_failure(checks, "port reader L102")
        assert checks["reader L102"]["status"] == "SKIP"
        assert checks["reader L101"]["status"] == "OK"
    finally:
        reader.replug()
    assert site.wait_status(
        lambda s: s["readers"]["L102"]["state"] in ("connected", "recovered")
    ), "reader did not come back"


def test_broker_down(site: TlsSite) -> None:
    site.broker.stop()
    try:
        assert site.wait_status(lambda s: not s["link"]["connected"], 30)
        code, checks = doctor_json(site.config_path)
        assert code == 1
        broker = only_failure(checks, "broker")
        assert "the broker is down" in broker["detail"]
        assert "daemon's link is down" in broker["detail"]
        assert f"127.0.0.1:{site.tls_port}" in broker["fix"]
    finally:
        site.broker.start()
    assert site.wait_status(lambda s: s["link"]["connected"], 60), "link did not come back"


def test_certificate_rejected(site: TlsSite) -> None:
    # The broker now trusts another CA only: the gateway's certificate is rejected.
    site.restart_broker(site.other_pki.ca)
    try:
        assert site.wait_status(lambda s: not s["link"]["connected"], 30)
        code, checks = doctor_json(site.config_path)
        assert code == 1
        broker = only_failure(checks, "broker")
        assert "rejected the client certificate" in broker["detail"]
        assert "install the certificate the platform's CA issued" in broker["fix"]
        assert "CN=gw-sim-gw-01" in broker["fix"]
        assert checks["tls files"]["status"] == "OK"
    finally:
        site.restart_broker()
    assert site.wait_status(lambda s: s["link"]["connected"], 60), "link did not come back"


def test_lock_with_the_wrong_key(site: TlsSite) -> None:
    lock = site.site.building.lock("L101")
    right_key = lock.scbk
    # The lock is swapped for one holding another key (power cycle with a new key).
    lock.power_off()
    lock.scbk = os.urandom(16)
    lock.power_on()
    try:
        assert site.wait_status(lambda s: site.lock_entry(s, 1)["key_mismatch"], 60)
        code, checks = doctor_json(site.config_path)
        assert code == 1
        entry = only_failure(checks, "lock L101")
        assert "refuses the gateway's secure-channel key" in entry["detail"]
        assert "lockgw locks keyset 1 --install" in entry["fix"]
        assert checks["lock keys bus0"]["status"] == "OK"
        assert checks["lock L102"]["status"] == "OK"
    finally:
        lock.power_off()
        lock.scbk = right_key
        lock.power_on()
    assert site.wait_status(
        lambda s: site.lock_entry(s, 1)["online"] and site.lock_entry(s, 1)["secure_channel"], 120
    ), "lock did not come back with its key"


def test_system_clock_ahead_of_the_platform(site: TlsSite, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = site.site.building.platform
    platform_clock_offset(monkeypatch, -3600)  # the platform is an hour behind us
    ack = platform.wait_ack(platform.ping(), timeout=30)
    assert ack["status"] == "rejected"  # it arrived past its exp by our clock
    code, checks = doctor_json(site.config_path)
    assert code == 1
    clock = only_failure(checks, "clock")
    assert "past its exp" in clock["detail"] and "ahead" in clock["detail"]
    assert "NTP" in clock["fix"]

    monkeypatch.undo()
    assert platform.wait_ack(platform.ping(), timeout=30)["status"] == "ok"
    code, checks = doctor_json(site.config_path)
    assert checks["clock"]["status"] == "OK", checks["clock"]


def test_a_platform_ts_far_ahead_moves_nothing(
    site: TlsSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command signed an hour ahead of trusted time is refused and does not push it."""
    platform = site.site.building.platform
    platform_clock_offset(monkeypatch, 3600)  # the platform's signed ts is an hour ahead
    ack = platform.wait_ack(platform.ping(), timeout=30)
    assert ack["status"] == "rejected" and ack["error"].startswith("clock_skew")
    assert site.status()["clock"]["system_behind_s"] < 60  # trusted time was not pushed
    _code, checks = doctor_json(site.config_path)
    assert checks["clock"]["status"] == "OK", checks["clock"]


# ------------------------------------------------------- without a daemon
def test_missing_configuration_is_a_usage_error(tmp_path: Path) -> None:
    done = run_doctor(tmp_path / "nowhere.toml")
    assert done.returncode == 2
    assert "FAIL  config" in done.stdout and "file not found" in done.stdout
    assert "config/gateway.example.toml" in done.stdout

    code, checks = doctor_json(tmp_path / "nowhere.toml")
    assert code == 2 and list(checks) == ["config"]


def test_invalid_configuration_names_the_key(
    write_config: Callable[..., Path],
) -> None:
    path = write_config("\n[face]\nthreshhold = 0.4\n")
    code, checks = doctor_json(path)
    assert code == 2
    assert "face.threshhold: unknown key" in checks["config"]["detail"]


def test_bad_arguments_are_usage_errors(write_config: Callable[..., Path]) -> None:
    path = write_config()
    done = run_doctor(path, "--min-free", "lots")
    assert done.returncode == 2
    assert "'lots' is not a size" in done.stderr
    done = run_doctor(path, "--contact-max-age", "-5")
    assert done.returncode == 2
    assert "is not a duration" in done.stderr


@needs_mosquitto
def test_without_the_daemon_standalone_checks_still_run(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Loose key file, missing ports and camera; the device checks say why they are skipped."""
    if not port_open(1883):
        pytest.skip("no broker on 127.0.0.1:1883")
    path = write_config(
        "\n[[buses]]\n"
        f'name = "bus0"\nport = "{tmp_path / "dev" / "bus0"}"\nsecure_channel = false\n'
        "\n[[doors]]\n"
        f'id = "L1"\nbus = "bus0"\naddress = 1\nreader_port = "{tmp_path / "dev" / "rd"}"\n'
        f'camera = "{tmp_path / "gone.mp4"}"\n'
    )
    gateway_keys = tmp_path / "keys" / "gateway.jwks"
    os.chmod(gateway_keys, 0o644)
    code, checks = doctor_json(path)
    assert code == 1
    assert set(failures(checks)) == {
        "gateway keys",
        "key files",
        "port bus0",
        "port reader L1",
        "daemon",
        "camera L1",
    }
    assert checks["gateway keys"]["fix"] == f"chmod 600 {gateway_keys}"
    assert "mode 0644" in checks["gateway keys"]["detail"]
    assert f"chmod 600 {gateway_keys}" in checks["key files"]["fix"]
    assert "unplugged" in checks["port bus0"]["detail"]
    assert "the daemon is not running" in checks["daemon"]["detail"]
    assert "systemctl start lockgw" in checks["daemon"]["fix"]
    assert checks["lock L1"]["status"] == "SKIP"
    assert checks["reader L1"]["status"] == "SKIP"
    assert checks["face"]["status"] == "SKIP"
    assert "daemon not running" in checks["face"]["detail"]
    assert "no frame" in checks["camera L1"]["detail"]
    assert checks["broker"]["status"] == "OK"
    assert checks["platform contact"]["status"] == "SKIP"
    assert checks["disk"]["status"] == "OK"

    os.chmod(gateway_keys, 0o600)
    _, checks = doctor_json(path)
    assert checks["gateway keys"]["status"] == "OK"


def test_nothing_listening_where_the_broker_should_be(
    write_config: Callable[..., Path],
) -> None:
    from tests.support.mqtt import free_port

    port = free_port()
    code, checks = doctor_json(write_config(port=port))
    assert code == 1
    assert set(failures(checks)) == {"broker", "daemon"}
    assert "the broker is down" in checks["broker"]["detail"]


def test_json_report_shape(write_config: Callable[..., Path], tmp_path: Path) -> None:
    done = run_doctor(write_config(), "--json")
    data: dict[str, Any] = json.loads(done.stdout)
    assert set(data) == {"ok", "exit_code", "counts", "checks"}
    assert data["ok"] is False and data["exit_code"] == done.returncode == 1
    for check in data["checks"]:
        assert set(check) == {"name", "status", "detail", "fix"}
        assert check["status"] in ("OK", "FAIL", "WARN", "SKIP")
        if check["status"] == "FAIL":
            assert check["fix"], check
    assert sum(data["counts"].values()) == len(data["checks"])
    # The doctor only looks: the state directory it would check is still not there.
    assert not (tmp_path / "state").exists()


def _self_signed(directory: Path, name: str, *, days_valid: float) -> tuple[Path, Path]:
    """A certificate and key; negative ``days_valid`` gives one that has expired."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    end = now + dt.timedelta(days=days_valid)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now, end) - dt.timedelta(days=30))
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def test_expired_or_mismatched_client_certificate(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    ca, _ = _self_signed(tmp_path / "tls", "ca", days_valid=30)
    expired, expired_key = _self_signed(tmp_path / "tls", "gw-old", days_valid=-1)
    _, other_key = _self_signed(tmp_path / "tls", "gw-other", days_valid=30)

    def tls_config(cert: Path, key: Path) -> Path:
        path = write_config()
        text = path.read_text().replace('transport = "tcp"', 'transport = "tls"')
        text = text.replace(
            "[keys]", f'ca_file = "{ca}"\ncert_file = "{cert}"\nkey_file = "{key}"\n\n[keys]'
        )
        path.write_text(text)
        return path

    code, checks = doctor_json(tls_config(expired, expired_key))
    assert code == 1
    assert set(failures(checks)) == {"tls files", "daemon"}
    assert "client certificate expired" in checks["tls files"]["detail"]
    assert "CN=gw-old" in checks["tls files"]["detail"]
    assert "renewed certificate" in checks["tls files"]["fix"]
    assert checks["broker"]["status"] == "SKIP"

    code, checks = doctor_json(tls_config(expired, other_key))
    assert "is not the key of the certificate" in checks["tls files"]["detail"]

    os.chmod(other_key, 0o640)
    code, checks = doctor_json(tls_config(expired, other_key))
    assert checks["tls files"]["fix"] == f"chmod 600 {other_key}"


def test_on_a_terminal_the_report_is_a_table(tmp_path: Path) -> None:
    primary, secondary = os.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli.main", "doctor", "--config", str(tmp_path / "x")],
            stdout=secondary,
            stderr=secondary,
            env=env,
        )
        os.close(secondary)
        out = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the terminal closes when the child exits
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(timeout=60)
    finally:
        os.close(primary)
    text = out.decode("utf-8", "replace")
    assert code == 2
    assert "what was seen" in text and "fix" in text  # the table's header
    assert "FAIL" in text and "file not found" in text

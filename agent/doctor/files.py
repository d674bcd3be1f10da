"""Files the gateway reads: the configuration, key sets, state directory and TLS files."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

from agent.config.schema import Config, ConfigError, load_config
from agent.contract.keys import KeyFileError, fingerprint, load_gateway_keys, load_platform_keys
from agent.doctor.report import FAIL, OK, Check, format_age


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
    return [Check("tls files", OK, f"{about}; {format_age(left)} left, key mode 0600")]


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

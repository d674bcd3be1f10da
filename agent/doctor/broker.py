"""The broker: a session-free MQTT probe over the link's TLS, and the daemon's link."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Any

from agent.config.schema import Config
from agent.doctor.files import describe_certificate
from agent.doctor.report import FAIL, OK, SKIP, Check

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

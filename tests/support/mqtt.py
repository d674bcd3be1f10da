"""Test helpers for the platform link: a private broker, a cuttable link, a test PKI.

Nothing here is a fake of the broker: tests run a real Mosquitto
(:class:`firmware_sim.broker.MosquittoBroker`), kill it with SIGKILL, cut TCP
connections through a real proxy (:class:`firmware_sim.netcut.NetCut`), and use
real X.509 certificates made with ``cryptography``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware_sim.broker import MosquittoBroker, accepts, find_mosquitto
from firmware_sim.broker import free_port as free_port  # re-exported for the tests
from firmware_sim.netcut import NetCut

REPO = Path(__file__).resolve().parents[2]
# Locks the in-process gateway knows (lock.unlock for any other is refused).
RIG_LOCKS = ("door-1", "door-2", "door-3")


def have_mosquitto() -> bool:
    """True when a mosquitto binary is installed."""
    return find_mosquitto() is not None


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    return accepts("127.0.0.1", port)


# --- test PKI -------------------------------------------------------------------


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and client certificates by CN."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)


def make_pki(directory: Path, client_cns: list[str]) -> Pki:
    """Make a throw-away PKI in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lockgw test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(cn: str, server: bool) -> tuple[Path, Path]:
        key = _key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path, key_path = directory / f"{cn}.pem", directory / f"{cn}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return cert_path, key_path

    server_cert, server_key = issue("localhost", server=True)
    pki = Pki(directory, ca_path, server_cert, server_key)
    for cn in client_cns:
        pki.clients[cn] = issue(cn, server=False)
    return pki


# --- a gateway link assembled from real parts -----------------------------------


def write_key_files(directory: Path, platform_jwks: dict[str, object]) -> tuple[Path, Path]:
    """Create the gateway key set and pin the platform's set; returns (gateway, platform)."""
    import json

    from agent.contract.keys import create_gateway_keys

    directory.mkdir(parents=True, exist_ok=True)
    gw_path, pf_path = directory / "gateway.jwks", directory / "platform.jwks"
    create_gateway_keys(gw_path)
    pf_path.write_text(json.dumps(platform_jwks))
    return gw_path, pf_path


class GatewayRig:
    """Store + Outbox + GrantStore/GatewayApplier + CommandProcessor + Link, in this process.

    Unlocks the applier hands over are recorded in ``unlocks``.
    """

    def __init__(
        self,
        state: Path,
        gateway_id: str,
        gw_keys_path: Path,
        pf_keys_path: Path,
        port: int,
        **settings: object,
    ) -> None:
        from agent.contract.keys import load_gateway_keys, load_platform_keys
        from agent.grants.store import GrantStore
        from agent.state.secretbox import SecretBox
        from agent.state.store import Store
        from agent.sync.applier import GatewayApplier
        from agent.sync.commands import CommandProcessor
        from agent.sync.link import Link, LinkSettings
        from agent.sync.outbox import Outbox

        self.gw = gateway_id
        self.store = Store.open(state / "lockgw.db")
        self.box = SecretBox.load_or_create(state / "local.key")
        self.gw_keys = load_gateway_keys(gw_keys_path)
        self.pf_keys = load_platform_keys(pf_keys_path)
        outbox_args = {
            k: settings.pop(k) for k in ("max_bytes", "warn_ratio", "gap_grace_s") if k in settings
        }
        self.outbox = Outbox(self.store, gateway_id, self.gw_keys, self.pf_keys, **outbox_args)  # type: ignore[arg-type]
        self.unlocks: list[tuple[str, float, str]] = []
        self.grants = GrantStore(self.store, self.box, self.pf_keys)
        self.applier = GatewayApplier(
            self.grants, set(RIG_LOCKS), unlock=lambda lock, s, r: self.unlocks.append((lock, s, r))
        )
        self.processor = CommandProcessor(
            self.store, self.outbox, gateway_id, self.gw_keys, self.pf_keys, self.applier
        )
        base: dict[str, object] = {
            "host": "127.0.0.1",
            "port": port,
            "transport": "tcp",
            "health_interval_s": 2.0,
            "retry_after_s": 5.0,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 2.0,
        }
        base.update(settings)
        self.link = Link(
            LinkSettings(**base),  # type: ignore[arg-type]
            gateway_id,
            self.outbox,
            self.processor.handle,
            version="test",
        )

    def start(self, timeout: float = 15.0) -> None:
        """Start the link and wait for the session."""
        self.link.start()
        if not self.link.wait_connected(timeout):
            raise TimeoutError("gateway link did not connect")

    def close(self) -> None:
        """Stop the link and close the store."""
        self.link.stop(10)
        self.store.close()


class World:
    """A private broker, the platform simulator, and one gateway's parts (link not started).

    With ``via_proxy`` the gateway reaches the broker through a :class:`NetCut`
    (``world.proxy``); the platform simulator always connects directly.
    """

    def __init__(
        self, tmp: Path, gw: str = "bldg-001", via_proxy: bool = False, **settings: object
    ) -> None:
        import json

        from firmware_sim.platform import PlatformSim, SimKeys

        self.tmp = tmp
        self.gw = gw
        self.broker = MosquittoBroker(tmp / "broker")
        self.broker.start()
        self.proxy = NetCut(self.broker.address) if via_proxy else None
        self.platform_keys = SimKeys()
        self.gw_keys_path, self.pf_keys_path = write_key_files(
            tmp / "keys", self.platform_keys.public_jwks()
        )
        port = self.proxy.port if self.proxy else self.broker.port
        self.rig = GatewayRig(
            tmp / "state", gw, self.gw_keys_path, self.pf_keys_path, port, **settings
        )
        self.sim = PlatformSim(
            "127.0.0.1",
            self.broker.port,
            {gw: json.loads(self.gw_keys_path.read_text())},
            self.platform_keys,
        )
        self.sim.start()

    def start_gateway(self, timeout: float = 20.0) -> None:
        """Start the link; return once the platform saw ``online`` (so ``cmd`` is subscribed)."""
        self.rig.link.start()
        view = self.sim.view(self.gw)
        if not self.sim.wait_for(lambda: (view.status or {}).get("state") == "online", timeout):
            raise TimeoutError("gateway did not come online")

    def close(self) -> None:
        """Stop everything this world started."""
        try:
            self.rig.close()
        finally:
            self.sim.stop()
            if self.proxy is not None:
                self.proxy.close()
            self.broker.kill9()

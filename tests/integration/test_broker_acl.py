"""The production broker configuration: TLS client certificates, identity as username, ACL.

Runs ``config/mosquitto/mosquitto.conf`` itself (paths and port rewritten to a
temporary PKI) with the ACL from ``config/mosquitto/make_acl.py``.
"""

from __future__ import annotations

import getpass
import importlib.util
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim.broker import MosquittoBroker
from firmware_sim.platform import PlatformSim, SimKeys
from firmware_sim.polling import wait_until
from tests.support.mqtt import (
    REPO,
    GatewayRig,
    Pki,
    free_port,
    have_mosquitto,
    make_pki,
    write_key_files,
)

pytestmark = pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed")

CONF_DIR = REPO / "config" / "mosquitto"
ALPHA, BETA = "alpha-01", "beta-02"


def _make_acl() -> Any:
    spec = importlib.util.spec_from_file_location("make_acl", CONF_DIR / "make_acl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class TlsBroker:
    broker: MosquittoBroker
    pki: Pki
    port: int


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    tmp = tmp_path_factory.mktemp("tls")
    pki = make_pki(tmp / "pki", [f"gw-{ALPHA}", f"gw-{BETA}", "platform"])
    (tmp / "pki" / "lockgw.acl").write_text(_make_acl().acl_text([ALPHA, BETA], ["platform"]))
    port = free_port()
    conf = (CONF_DIR / "mosquitto.conf").read_text()
    conf = (
        conf.replace("/etc/mosquitto/lockgw/ca.pem", str(pki.ca))
        .replace("/etc/mosquitto/lockgw/broker.pem", str(pki.server_cert))
        .replace("/etc/mosquitto/lockgw/broker.key", str(pki.server_key))
        .replace("/etc/mosquitto/lockgw/", str(tmp / "pki") + "/")
        .replace("listener 8883", f"listener {port} 127.0.0.1")
        .replace("persistence true", "persistence false")
        .replace("log_dest syslog", f"log_dest file {tmp / 'mosquitto.log'}")
    )
    assert "lockgw.acl" in conf and "use_identity_as_username true" in conf
    broker = MosquittoBroker(tmp, port, config=conf + f"\nuser {getpass.getuser()}\n")
    broker.start()
    yield TlsBroker(broker, pki, port)
    broker.kill9()


class Client:
    """A raw paho MQTT 5 client with a certificate, recording what it gets."""

    def __init__(self, tb: TlsBroker, cn: str | None, client_id: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, Any] = {}
        self.subacks: list[Any] = []
        self.connack: Any = None
        self.event = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(cafile=str(tb.pki.ca))
        if cn is not None:
            cert, key = tb.pki.clients[cn]
            ctx.load_cert_chain(str(cert), str(key))
        self.c.tls_set_context(ctx)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda _c, _u, m: self._note(self.messages, (m.topic, m.payload))
        self.c.on_publish = lambda _c, _u, mid, rc, _p: self._put(mid, rc)
        self.c.on_subscribe = lambda _c, _u, _mid, rcs, _p: self._note(self.subacks, rcs)
        self.c.connect_async("127.0.0.1", tb.port)
        self.c.loop_start()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        with self.event:
            self.connack = rc
            self.event.notify_all()

    def _note(self, target: list[Any], item: Any) -> None:
        with self.event:
            target.append(item)
            self.event.notify_all()

    def _put(self, mid: int, rc: Any) -> None:
        with self.event:
            self.pubacks[mid] = rc
            self.event.notify_all()

    def wait(self, predicate: Any, timeout: float = 10.0) -> bool:
        with self.event:
            return self.event.wait_for(predicate, timeout)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_no_certificate_no_connection(tls_broker: TlsBroker) -> None:
    client = Client(tls_broker, None, "nobody")
    try:
        assert not client.wait(
            lambda: client.connack is not None and not client.connack.is_failure, 3
        )
    finally:
        client.close()


def test_a_gateway_cannot_write_or_read_another_gateways_topics(tls_broker: TlsBroker) -> None:
    platform = Client(tls_broker, "platform", "platform")
    alpha = Client(tls_broker, f"gw-{ALPHA}", f"gw-{ALPHA}")
    beta = Client(tls_broker, f"gw-{BETA}", f"gw-{BETA}")
    try:
        for c in (platform, alpha, beta):
            assert c.wait(lambda c=c: c.connack is not None), "no CONNACK"
            assert not c.connack.is_failure
        platform.c.subscribe([("lockgw/v1/+/evt", 1), ("lockgw/v1/+/alert", 1)])
        beta.c.subscribe(f"lockgw/v1/{BETA}/cmd", qos=1)
        alpha.c.subscribe(f"lockgw/v1/{BETA}/cmd", qos=1)
        assert platform.wait(lambda: len(platform.subacks) == 1)
        assert beta.wait(lambda: len(beta.subacks) == 1)
        assert alpha.wait(lambda: len(alpha.subacks) == 1)
        assert not beta.subacks[0][0].is_failure
        # Mosquitto 2.0 may grant the subscription; the read ACL is enforced at delivery,
        # which is what is checked below.

        forged = alpha.c.publish(f"lockgw/v1/{BETA}/evt", b"forged", qos=1)
        assert alpha.wait(lambda: forged.mid in alpha.pubacks)
        assert alpha.pubacks[forged.mid].is_failure
        cmd_to_alpha = alpha.c.publish(f"lockgw/v1/{BETA}/cmd", b"forged-cmd", qos=1)
        assert alpha.wait(lambda: cmd_to_alpha.mid in alpha.pubacks)
        assert alpha.pubacks[cmd_to_alpha.mid].is_failure
        own = alpha.c.publish(f"lockgw/v1/{ALPHA}/evt", b"mine", qos=1)
        assert platform.wait(lambda: any(p == b"mine" for _, p in platform.messages))
        assert alpha.wait(lambda: own.mid in alpha.pubacks)
        assert not alpha.pubacks[own.mid].is_failure

        platform.c.publish(f"lockgw/v1/{BETA}/cmd", b"for-beta", qos=1)
        assert beta.wait(lambda: any(p == b"for-beta" for _, p in beta.messages))
        assert not alpha.wait(lambda: bool(alpha.messages), 1.0)
        assert all(p != b"forged" for _, p in platform.messages)
        assert all(p != b"forged-cmd" for _, p in beta.messages)
    finally:
        for c in (platform, alpha, beta):
            c.close()


def test_client_id_is_bound_to_the_certificate(tls_broker: TlsBroker) -> None:
    beta = Client(tls_broker, f"gw-{BETA}", f"gw-{BETA}")
    try:
        assert beta.wait(lambda: beta.connack is not None and not beta.connack.is_failure)
        # alpha asks for beta's client id: the broker gives it its own (CN) instead,
        # so beta's session is not taken over
        intruder = Client(tls_broker, f"gw-{ALPHA}", f"gw-{BETA}")
        try:
            assert intruder.wait(lambda: intruder.connack is not None)
            assert not beta.wait(lambda: not beta.c.is_connected(), 1.5)
        finally:
            intruder.close()
    finally:
        beta.close()


def test_gateway_link_over_tls_round_trip(tls_broker: TlsBroker, tmp_path: Path) -> None:
    keys = SimKeys()
    gw_path, pf_path = write_key_files(tmp_path / "keys", keys.public_jwks())
    pki = tls_broker.pki
    cert, key = pki.clients[f"gw-{ALPHA}"]
    rig = GatewayRig(
        tmp_path / "state",
        ALPHA,
        gw_path,
        pf_path,
        tls_broker.port,
        transport="tls",
        ca_file=pki.ca,
        cert_file=cert,
        key_file=key,
    )
    sim = PlatformSim(
        "127.0.0.1",
        tls_broker.port,
        {ALPHA: json.loads(gw_path.read_text())},
        keys,
        client_id="platform",
        tls=(pki.ca, *pki.clients["platform"]),
    )
    sim.start()
    try:
        rig.link.start()
        view = sim.view(ALPHA)
        assert sim.wait_for(lambda: (view.status or {}).get("state") == "online", 20)
        cmd_id = sim.send(ALPHA, "ping", {})
        assert sim.wait_ack(ALPHA, cmd_id)["status"] == "ok"
        assert sim.wait_for(lambda: view.prefix >= 1, 10)
    finally:
        rig.close()
        sim.stop()


def test_refused_publishes_are_counted_and_kept(tls_broker: TlsBroker, tmp_path: Path) -> None:
    """A gateway holding alpha's certificate but configured as beta: every publish to
    beta's topics gets a PUBACK with a failure reason code; nothing leaves the outbox."""
    keys = SimKeys()
    gw_path, pf_path = write_key_files(tmp_path / "keys", keys.public_jwks())
    cert, key = tls_broker.pki.clients[f"gw-{ALPHA}"]
    rig = GatewayRig(
        tmp_path / "state",
        BETA,
        gw_path,
        pf_path,
        tls_broker.port,
        transport="tls",
        ca_file=tls_broker.pki.ca,
        cert_file=cert,
        key_file=key,
        retry_after_s=1.0,
    )
    try:
        rig.outbox.enqueue(
            "door.opened",
            {"lock": "d", "method": ["id_card"], "grant_id": "g", "at": "2026-01-01T00:00:00Z"},
        )
        rig.link.start()
        counters = rig.link.counters
        assert wait_until(lambda: counters["puback_failures"] >= 2, 20), counters
        assert counters["republish_rounds"] >= 1
        assert rig.outbox.stats().depth == 1
    finally:
        rig.close()

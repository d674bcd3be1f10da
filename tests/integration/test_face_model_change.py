"""A change of ``[face] model``: every guest's template is made again from the sealed signed
grant, by the real face workers, and no guest is without a template in between."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey

from agent.contract.keys import (
    create_gateway_keys,
    load_gateway_keys,
    load_platform_keys,
    new_key,
    public_set,
)
from agent.contract.messages import make_envelope
from agent.contract.seal import seal
from agent.face import FaceSettings, FaceWorker, template_model
from agent.grants.enrol import enroll_pending
from agent.grants.store import GrantStore
from agent.state.secretbox import SecretBox
from agent.state.store import Store
from agent.sync.applier import GatewayApplier
from agent.sync.commands import CommandProcessor
from agent.sync.outbox import Outbox
from firmware_sim.photos import GUEST_A, GUEST_B, have_faces

GW = "mc-gw-01"
LOAD_S = 90.0

pytestmark = pytest.mark.skipif(not have_faces(), reason="face photos not found (../shared/faces)")


class Gateway:
    """The store, the grant store and the command path, with a platform key to sign grants."""

    def __init__(self, root: Path) -> None:
        keys = root / "keys"
        keys.mkdir()
        create_gateway_keys(keys / "gateway.jwks")
        self.platform_sig = new_key("Ed25519")
        enc = new_key("X25519")
        platform = {"keys": [self.platform_sig.as_dict(private=True), enc.as_dict(private=True)]}
        (keys / "platform.jwks").write_text(json.dumps(public_set(platform)), encoding="utf-8")
        gw_keys = load_gateway_keys(keys / "gateway.jwks")
        pf_keys = load_platform_keys(keys / "platform.jwks")
        gateway_enc = next(k for k in gw_keys.public_set["keys"] if k["crv"] == "X25519")
        self.gateway_enc = OKPKey.import_key(gateway_enc)
        self.db = root / "lockgw.db"
        self.store = Store.open(self.db)
        self.grants = GrantStore(self.store, SecretBox.load_or_create(root / "local.key"), pf_keys)
        outbox = Outbox(self.store, GW, gw_keys, pf_keys)
        applier = GatewayApplier(self.grants, {"L101"}, lambda *a: None)
        self.processor = CommandProcessor(self.store, outbox, GW, gw_keys, pf_keys, applier)

    def send(self, msg_type: str, body: dict[str, Any]) -> None:
        now = dt.datetime.now(dt.UTC)
        env = make_envelope(msg_type, GW, body, exp=now + dt.timedelta(hours=1), now=now)
        outcome = self.processor.handle(seal(env, self.platform_sig, self.gateway_enc).encode())
        assert outcome.status == "ok", outcome

    def models(self) -> dict[str, str | None]:
        conn = sqlite3.connect(self.db)
        try:
            return dict(conn.execute("SELECT guest_id, template_model FROM grant_guests"))
        finally:
            conn.close()


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path)
    gw.send("ping", {})
    now = dt.datetime.now(dt.UTC)
    guests = [
        {
            "guest_id": guest_id,
            "id_number": number,
            "name": name,
            "face_jpeg_b64": base64.b64encode(photo.read_bytes()).decode(),
        }
        for guest_id, number, name, photo in (
            ("a", "11010519491231002X", "王建国", GUEST_A[0]),
            ("b", "110105196211200346", "李秀英", GUEST_B[0]),
        )
    ]
    gw.send(
        "grant.put",
        {
            "grant_id": "G1",
            "room": "101",
            "locks": ["L101"],
            "valid_from": _iso(now - dt.timedelta(hours=1)),
            "valid_until": _iso(now + dt.timedelta(hours=24)),
            "guests": guests,
        },
    )
    yield gw
    gw.store.close()


def _worker(settings: FaceSettings) -> FaceWorker:
    worker = FaceWorker(settings, timeout_s=30.0)
    worker.start()
    assert worker.wait_ready(LOAD_S), "face worker did not load its models"
    return worker


def test_changing_the_model_reencodes_every_template(gateway: Gateway) -> None:
    grants = gateway.grants
    with _worker(FaceSettings(model="dlib", liveness="off")) as dlib:
        assert enroll_pending(grants, dlib) == 2
    assert gateway.models() == {"a": "dlib", "b": "dlib"}
    assert grants.pending_templates() == []
    with _worker(FaceSettings()) as onnx:
        # The site now runs MobileFaceNet: both templates are queued, and kept meanwhile.
        assert grants.requeue_other_models(onnx.model) == 2
        for guest in ("a", "b"):
            old = grants.template("G1", guest)
            assert old is not None and template_model(old) == "dlib"
        assert enroll_pending(grants, onnx) == 2
        assert enroll_pending(grants, onnx) == 0  # nothing left to do
    assert gateway.models() == {"a": "mobilefacenet", "b": "mobilefacenet"}
    for guest in ("a", "b"):
        new = grants.template("G1", guest)
        assert new is not None and template_model(new) == "mobilefacenet"
    # The photos were read from the sealed signed grant; none lies in the database in clear.
    data = b"".join(p.read_bytes() for p in gateway.db.parent.glob("lockgw.db*"))
    for photo in (GUEST_A[0], GUEST_B[0]):
        jpeg = photo.read_bytes()
        assert jpeg[200:264] not in data
        assert base64.b64encode(jpeg)[200:264] not in data


def test_a_busy_worker_leaves_the_old_template_in_place(gateway: Gateway) -> None:
    grants = gateway.grants
    with _worker(FaceSettings(model="dlib", liveness="off")) as dlib:
        enroll_pending(grants, dlib)

    class Busy:
        model = "mobilefacenet"

        def encode_reference(self, image: bytes, timeout: float) -> str:
            return "busy"

    assert enroll_pending(grants, Busy()) == 0
    assert sorted(grants.pending_templates()) == [("G1", "a"), ("G1", "b")]
    for guest in ("a", "b"):
        assert grants.template("G1", guest) is not None  # no guest left without one

"""Contract revision 1.1 on the command path: photo limits, named errors, grant.sync in parts.

Real sealing both ways (the independent platform simulator builds the commands),
the real command processor, applier and grant store on a SQLite file; photos
are real face photos from ../shared/faces.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from jwcrypto import jwk

from agent.contract.keys import create_gateway_keys, load_gateway_keys, load_platform_keys
from agent.contract.limits import MAX_PAYLOAD_BYTES, PHOTO_MAX_BYTES, PHOTO_MAX_SIDE_PX, jpeg_size
from agent.grants.store import GrantStore
from agent.state.secretbox import SecretBox
from agent.state.store import Store
from agent.sync.applier import GatewayApplier
from agent.sync.commands import CommandProcessor
from agent.sync.outbox import Outbox
from firmware_sim.platform import PlatformSim, SimKeys, TooLarge, open_jw

GW = "bldg-001"
LOCKS = {"door-1", "door-2"}


class Rig:
    """One gateway's command path on a temporary folder."""

    def __init__(self, tmp: Path) -> None:
        keys = SimKeys()
        create_gateway_keys(tmp / "gateway.jwks")
        (tmp / "platform.jwks").write_text(json.dumps(keys.public_jwks()))
        gw_keys = load_gateway_keys(tmp / "gateway.jwks")
        pf_keys = load_platform_keys(tmp / "platform.jwks")
        self.store = Store.open(tmp / "lockgw.db")
        self.outbox = Outbox(self.store, GW, gw_keys, pf_keys)
        self.grants = GrantStore(self.store, SecretBox.load_or_create(tmp / "local.key"), pf_keys)
        applier = GatewayApplier(self.grants, LOCKS, unlock=lambda *_: None)
        self.proc = CommandProcessor(self.store, self.outbox, GW, gw_keys, pf_keys, applier)
        self.sim = PlatformSim("127.0.0.1", 1, {GW: gw_keys.public_set}, keys, client_id="unit")
        self._enc = keys.enc
        self._verify = {
            k["kid"]: jwk.JWK(**k) for k in gw_keys.public_set["keys"] if k["crv"] == "Ed25519"
        }

    def acks(self) -> dict[str, dict[str, Any]]:
        out = {}
        for item in self.outbox.next_batch({}, 100_000):
            env = open_jw(item.sealed, self._enc, self._verify)
            if env["type"] == "ack":
                out[env["body"]["cmd_id"]] = env["body"]
        return out

    def grant_ids(self) -> list[str]:
        with self.store.read() as conn:
            return [r[0] for r in conn.execute("SELECT grant_id FROM grants ORDER BY 1")]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def phone_photo(faces_dir: Path, megabytes: float) -> bytes:
    """A real face photo blown up to phone-camera size: a JPEG of about ``megabytes`` MB."""
    img = cv2.imread(str(faces_dir / "deepface" / "img1.jpg"), cv2.IMREAD_COLOR)
    assert img is not None
    big = cv2.resize(img, (3000, 4000), interpolation=cv2.INTER_CUBIC)
    # Sensor noise, as a phone photo has: it is what makes such files megabytes.
    noise = np.random.default_rng(7).normal(0, 6, big.shape)
    big = np.clip(big + noise, 0, 255).astype(np.uint8)
    for quality in range(60, 101, 5):
        ok, enc = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        if len(enc) >= megabytes * 1_000_000:
            return enc.tobytes()
    raise AssertionError("could not make a photo that large")


def grant(grant_id: str, photo: bytes | None, lock: str = "door-1") -> dict[str, Any]:
    body = PlatformSim.grant_body(grant_id, [lock])
    if photo is not None:
        body["guests"][0]["face_jpeg_b64"] = base64.b64encode(photo).decode("ascii")
    return body


def test_phone_photo_is_scaled_by_the_platform_and_refused_unscaled(
    rig: Rig, faces_dir: Path
) -> None:
    photo = phone_photo(faces_dir, 2.3)
    assert len(photo) >= 2_300_000
    # As the phone took it, the grant cannot travel at all: 1 MiB is the contract's limit.
    with pytest.raises(TooLarge):
        rig.sim.send(GW, "grant.put", grant("g-big", photo), scale_photos=False)
    # A platform that ignores the photo limit but stays under 1 MiB: a 2.3-megapixel
    # crop of it is refused by name, not in silence, and nothing is stored.
    img = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    ok, crop = cv2.imencode(".jpg", img[:1200, :1920], [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok and PHOTO_MAX_BYTES < len(crop) < MAX_PAYLOAD_BYTES // 2
    cmd_id, text = rig.sim.build(
        GW, "grant.put", grant("g-big", crop.tobytes()), scale_photos=False
    )
    outcome = rig.proc.handle(text.encode())
    assert (outcome.status, outcome.reason) == ("rejected", "photo_too_large")
    error = rig.acks()[cmd_id]["error"]
    assert error.startswith("photo_too_large: body.guests.0.face_jpeg_b64: ")
    assert rig.grant_ids() == []
    # A photo within 200 KiB but wider than 1,280 px is refused too.
    small = cv2.resize(img, (1600, 2133), interpolation=cv2.INTER_AREA)
    ok, wide = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 20])
    assert ok and len(wide) <= PHOTO_MAX_BYTES
    cmd_id, text = rig.sim.build(
        GW, "grant.put", grant("g-wide", wide.tobytes()), scale_photos=False
    )
    assert rig.proc.handle(text.encode()).reason == "photo_too_large"
    assert "2133 px" in rig.acks()[cmd_id]["error"] or "1600x2133" in rig.acks()[cmd_id]["error"]
    # The same 2.3 MB photo through a revision-1.1 platform: scaled down, accepted, and the
    # guest's photo as stored is within the limits.
    cmd_id, text = rig.sim.build(GW, "grant.put", grant("g-big", photo))
    assert len(text) < MAX_PAYLOAD_BYTES
    assert rig.proc.handle(text.encode()).status == "ok"
    assert rig.acks()[cmd_id]["status"] == "ok"
    stored = rig.grants.guest_photo("g-big", "g-big-g1")
    assert stored is not None and len(stored) <= PHOTO_MAX_BYTES
    size = jpeg_size(stored)
    assert size is not None and max(size) <= PHOTO_MAX_SIDE_PX


def sync_grants(faces_dir: Path, count: int) -> list[dict[str, Any]]:
    photos = []
    for path in sorted((faces_dir / "deepface").glob("img*.jpg"))[:20]:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        ok, enc = cv2.imencode(".jpg", cv2.resize(img, (480, 600)), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        photos.append(enc.tobytes())
    return [grant(f"s-{n:03d}", photos[n % len(photos)], f"door-{n % 2 + 1}") for n in range(count)]


def test_grant_sync_of_200_grants_in_parts_is_applied_only_when_complete(
    rig: Rig, faces_dir: Path
) -> None:
    for old in ("old-1", "old-2"):
        rig.proc.handle(rig.sim.build(GW, "grant.put", grant(old, None))[1].encode())
    grants = sync_grants(faces_dir, 200)
    parts = rig.sim.build_sync(GW, grants)
    assert len(parts) >= 3 and all(len(text) <= MAX_PAYLOAD_BYTES for _, text in parts)
    # Every part but one (the third): each is kept and answered ok, nothing changes.
    missing = parts[2]
    for cmd_id, text in parts[:2] + parts[3:]:
        assert rig.proc.handle(text.encode()).status == "ok"
        assert rig.acks()[cmd_id] == {"cmd_id": cmd_id, "status": "ok"}
    assert rig.grant_ids() == ["old-1", "old-2"]
    assert len(rig.grants.guests_for_card("11010519491231002X")) == 2
    # The missing part arrives: the set is the union of the parts, in one step.
    assert rig.proc.handle(missing[1].encode()).status == "ok"
    assert rig.grant_ids() == [f"s-{n:03d}" for n in range(200)]
    guests = rig.grants.guests_for_card("11010519491231002X")
    assert len(guests) == 200  # every grant verifies against its own part's signature
    assert rig.grants.guest_photo("s-137", "s-137-g1") is not None
    with rig.store.read() as conn:
        assert conn.execute("SELECT count(*) FROM grant_sync_parts").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM grants_signed").fetchone()[0] == len(parts)


def test_newer_sync_discards_an_incomplete_older_one(rig: Rig, faces_dir: Path) -> None:
    rig.proc.handle(rig.sim.build(GW, "grant.put", grant("old-1", None))[1].encode())
    older = rig.sim.build_sync(GW, sync_grants(faces_dir, 120), sync_id="sync-a")
    newer = rig.sim.build_sync(GW, sync_grants(faces_dir, 120)[:110], sync_id="sync-b")
    assert len(older) >= 2 and len(newer) >= 2
    rig.proc.handle(older[0][1].encode())
    for _, text in newer:
        assert rig.proc.handle(text.encode()).status == "ok"
    assert rig.grant_ids() == [f"s-{n:03d}" for n in range(110)]
    # A late part of the discarded sync changes nothing and is answered by name.
    late_id, late = older[1]
    outcome = rig.proc.handle(late.encode())
    assert (outcome.status, outcome.reason) == ("rejected", "sync_superseded")
    assert rig.acks()[late_id]["error"].startswith("sync_superseded: ")
    assert len(rig.grant_ids()) == 110


def test_parts_older_than_ten_minutes_are_discarded(rig: Rig, faces_dir: Path) -> None:
    parts = rig.sim.build_sync(GW, sync_grants(faces_dir, 120), sync_id="sync-slow")
    rig.proc.handle(parts[0][1].encode())
    with rig.store.write() as conn:  # the first part arrived 601 s ago
        conn.execute("UPDATE grant_syncs SET first_at = ?", (time.time() - 601,))
    outcome = rig.proc.handle(parts[1][1].encode())
    assert (outcome.status, outcome.reason) == ("rejected", "sync_expired")
    assert rig.grant_ids() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"grants": [], "sync_id": "s", "part": 1}, "body.sync_id, body.part and body.parts"),
        ({"grants": [], "sync_id": "s", "part": 3, "parts": 2}, "body.part"),
    ],
)
def test_malformed_parts_are_refused_as_invalid_body(
    rig: Rig, body: dict[str, Any], field: str
) -> None:
    cmd_id, text = rig.sim.build(GW, "grant.sync", body)
    assert rig.proc.handle(text.encode()).reason == "invalid_body"
    assert rig.acks()[cmd_id]["error"].startswith(f"invalid_body: grant.sync: {field}")

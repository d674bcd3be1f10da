"""The platform simulator: an independent implementation of central-link-v1.

It plays the police platform with its own keys and a second JOSE library
(jwcrypto; the gateway uses joserfc), and never imports ``agent``: if both
sides interoperate, both follow the contract rather than each other's bugs.

What it does: publishes sealed commands to ``lockgw/v1/<gw>/cmd`` (builders
for every type, and for every kind of bad command), receives and opens
``evt``/``alert``/``ack``, checks signature, ``gw`` and topic, deduplicates on
(``gw``, ``seq``), tracks the contiguous prefix of seqs received (seqs the
gateway announced as dropped in ``outbox.dropped`` count as settled), reports
gaps, and answers progress with ``sync.ack`` once the messages are stored (in
this process's memory). Duplicates trigger a fresh ``sync.ack``, so a gateway
that missed one learns again.

Revision 1.1 (section 5): :meth:`PlatformSim.send` never publishes more than
1 MiB; grant photos over 200 KiB or 1,280 px are scaled down first
(:func:`fit_photo`), and :meth:`PlatformSim.send_sync` splits a grant set that
does not fit one message into parts. :meth:`PlatformSim.publish_raw` and
``build(..., scale_photos=False)`` bypass that, to play a platform that breaks
the contract.

Electronic ID (contract section 6): ``eid.verify`` requests arriving on
``P/req`` are checked, their code verified by :attr:`PlatformSim.identity` (the
identity service stand-in), and answered with a sealed ``eid.result`` command,
after the service's delay, and never past ``answer_by`` unless
:attr:`PlatformSim.answer_late` is set (a misbehaving platform, for tests).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import multiprocessing
import os
import queue
import secrets
import signal
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from jwcrypto import jwe as cjwe
from jwcrypto import jwk as cjwk
from jwcrypto import jws as cjws
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_sim.identity_service import IdentityService, result_body

log = logging.getLogger(__name__)

TOPIC_ROOT = "lockgw/v1"
MAX_PAYLOAD_BYTES = 1_048_576
PHOTO_MAX_BYTES = 200 * 1024
PHOTO_MAX_SIDE_PX = 1280
BAD_KINDS = (
    "unknown_key",
    "tampered",
    "wrong_gw",
    "expired",
    "invalid_body",
    "oversized",
    "garbage",
    "not_jwe",
)


class TooLarge(ValueError):
    """A command that would break the contract's size limit (the simulator never sends it)."""


def fit_photo(jpeg: bytes) -> bytes:
    """``jpeg`` scaled down to the contract's limits (1,280 px, 200 KiB); as is when it fits."""
    import cv2  # only grants with photos need it
    import numpy as np

    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return jpeg  # not an image: the gateway decides
    h, w = img.shape[:2]
    if len(jpeg) <= PHOTO_MAX_BYTES and max(h, w) <= PHOTO_MAX_SIDE_PX:
        return jpeg
    side = min(PHOTO_MAX_SIDE_PX, max(h, w))
    quality = 90
    while True:
        scale = side / max(h, w)
        small = cv2.resize(
            img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
        ok, enc = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(enc) <= PHOTO_MAX_BYTES:
            return enc.tobytes()
        if quality > 60:
            quality -= 10
        else:
            side = int(side * 0.8)


def _fit_grant(grant: dict[str, Any]) -> dict[str, Any]:
    guests = []
    for guest in grant.get("guests", []):
        photo = guest.get("face_jpeg_b64")
        if isinstance(photo, str) and photo:
            try:
                raw = base64.b64decode(photo, validate=True)
            except ValueError:
                guests.append(guest)
                continue
            fitted = fit_photo(raw)
            if fitted is not raw:
                guest = guest | {"face_jpeg_b64": base64.b64encode(fitted).decode("ascii")}
        guests.append(guest)
    return grant | {"guests": guests} if "guests" in grant else grant


def _now_iso(delta_s: float = 0.0) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=delta_s)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def new_okp(curve: str) -> cjwk.JWK:
    """A fresh OKP key with kid = its RFC 7638 thumbprint."""
    key = cjwk.JWK.generate(kty="OKP", crv=curve)
    return cjwk.JWK(**(json.loads(key.export_private()) | {"kid": key.thumbprint()}))


@dataclass
class SimKeys:
    """The platform's own Ed25519 (signing) and X25519 (decryption) keys."""

    sig: cjwk.JWK = field(default_factory=lambda: new_okp("Ed25519"))
    enc: cjwk.JWK = field(default_factory=lambda: new_okp("X25519"))

    def public_jwks(self) -> dict[str, Any]:
        """The public JWK Set the gateway pins (newest X25519 last)."""
        return {
            "keys": [
                json.loads(self.sig.export_public()) | {"use": "sig"},
                json.loads(self.enc.export_public()) | {"use": "enc"},
            ]
        }


class OpenError(Exception):
    """An inbound gateway message did not open or verify."""


def seal_jw(body: dict[str, Any], sig: cjwk.JWK, recipient: cjwk.JWK) -> str:
    """Sign with ``sig`` (Ed25519) and encrypt to ``recipient`` (X25519), per the contract."""
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    signer = cjws.JWS(payload)
    signer.add_signature(
        sig, alg="Ed25519", protected=json.dumps({"alg": "Ed25519", "kid": sig.get("kid")})
    )
    compact = signer.serialize(compact=True)
    header = {"alg": "ECDH-ES", "enc": "A256GCM", "kid": recipient.get("kid"), "cty": "JWT"}
    token = cjwe.JWE(compact.encode(), protected=json.dumps(header), recipient=recipient)
    return str(token.serialize(compact=True))


_local = threading.local()


def _parsers() -> tuple[cjwe.JWE, cjws.JWS]:
    # jwcrypto deep-copies its header registry in every JWE()/JWS() constructor,
    # which costs more than the cryptography; deserialize() documents that it
    # resets all state, so one pair per thread is reused.
    pair = getattr(_local, "pair", None)
    if pair is None:
        token = cjwe.JWE()
        token.allowed_algs = ["ECDH-ES", "A256GCM"]
        signed = cjws.JWS()
        signed.allowed_algs = ["Ed25519"]
        pair = _local.pair = (token, signed)
    return pair


def open_jw(text: str, enc: cjwk.JWK, verify: dict[str, cjwk.JWK]) -> dict[str, Any]:
    """Decrypt with ``enc``, verify with a pinned key by kid, parse the JSON body."""
    token, signed = _parsers()
    try:
        token.deserialize(text, key=enc)
        header = token.jose_header
        if header.get("cty") != "JWT" or header.get("kid") != enc.get("kid"):
            raise OpenError("unexpected JWE header")
        signed.deserialize(token.payload.decode("ascii"))
        kid = signed.jose_header.get("kid")
        if kid not in verify or signed.jose_header.get("alg") != "Ed25519":
            raise OpenError("JWS not signed by a pinned gateway key")
        signed.verify(verify[kid], alg="Ed25519")
        body = json.loads(signed.payload)
    except OpenError:
        raise
    except Exception as exc:
        raise OpenError(f"{type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise OpenError("body is not an object")
    return body


_worker_keys: tuple[cjwk.JWK, dict[str, dict[str, cjwk.JWK]]] | None = None


def _worker_init(enc_private: str, pins: dict[str, list[dict[str, Any]]]) -> None:
    # Per-process state of a pool worker, set once by the pool's initializer.
    global _worker_keys
    parent = os.getppid()

    def orphan_watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=orphan_watch, daemon=True).start()
    verify = {gw: {k["kid"]: cjwk.JWK(**k) for k in keys} for gw, keys in pins.items()}
    _worker_keys = (cjwk.JWK.from_json(enc_private), verify)


def _worker_open(
    batch: list[tuple[str, str, bytes]],
) -> list[tuple[str, str, dict[str, Any] | None, str]]:
    """In a worker process: open a batch of (gw, kind, payload)."""
    assert _worker_keys is not None
    enc, verify = _worker_keys
    out: list[tuple[str, str, dict[str, Any] | None, str]] = []
    for gw, kind, payload in batch:
        if gw not in verify:
            out.append((gw, kind, None, "gateway not pinned"))
            continue
        try:
            out.append((gw, kind, open_jw(payload.decode("ascii", "replace"), enc, verify[gw]), ""))
        except OpenError as exc:
            out.append((gw, kind, None, str(exc)))
    return out


@dataclass
class GatewayView:
    """What the platform knows about one gateway."""

    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    arrivals: list[tuple[int, str, float]] = field(default_factory=list)
    dropped: set[int] = field(default_factory=set)
    prefix: int = 0
    max_seq: int = 0
    duplicates: int = 0
    acked_prefix: int = 0
    last_ack_at: float = 0.0
    status: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    acks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def gaps(self) -> list[int]:
        """Seqs above the settled prefix and below the highest seen that are missing."""
        return [
            s
            for s in range(self.prefix + 1, self.max_seq)
            if s not in self.messages and s not in self.dropped
        ]


class PlatformSim:
    """An MQTT client playing the platform for any number of gateways."""

    def __init__(
        self,
        host: str,
        port: int,
        gateway_jwks: dict[str, dict[str, Any]],
        keys: SimKeys | None = None,
        *,
        client_id: str = "platform",
        tls: tuple[Path, Path, Path] | None = None,
        ack_interval_s: float = 0.05,
        auto_ack: bool = True,
        workers: int = 0,
    ) -> None:
        """``gateway_jwks`` maps gateway id → its public JWK Set; ``tls`` = (ca, cert, key).

        ``workers`` > 0 opens messages in that many worker processes (a platform
        scales out the same way); gateways must then be pinned before :meth:`start`.
        """
        self.keys = keys or SimKeys()
        self._host, self._port = host, port
        self._tls = tls
        self._ack_interval = ack_interval_s
        self.auto_ack = auto_ack
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._gw_sig: dict[str, dict[str, cjwk.JWK]] = {}
        self._gw_enc: dict[str, cjwk.JWK] = {}
        for gw, jwks in gateway_jwks.items():
            self.pin_gateway(gw, jwks)
        self.views: dict[str, GatewayView] = {}
        self.counters: dict[str, int] = {"received": 0, "rejected": 0, "sync_acks": 0}
        self.on_message_hook: Callable[[str, dict[str, Any]], None] | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        self._client.max_inflight_messages_set(200)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 2)
        if tls is not None:
            ctx = ssl.create_default_context(cafile=str(tls[0]))
            ctx.load_cert_chain(str(tls[1]), str(tls[2]))
            self._client.tls_set_context(ctx)
        self.connected = threading.Event()
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._inbox: queue.Queue[tuple[str, str, bytes]] = queue.Queue(maxsize=4000)
        self._batches = threading.BoundedSemaphore(max(1, workers) * 4)
        self.identity = IdentityService()
        self.answer_late = False
        self.eid_requests: list[dict[str, Any]] = []
        self.eid_results: list[dict[str, Any]] = []

    def pin_gateway(self, gw: str, jwks: dict[str, Any]) -> None:
        """Pin a gateway's public keys (several kids allowed; newest X25519 last)."""
        sig: dict[str, cjwk.JWK] = {}
        enc: cjwk.JWK | None = None
        for key in jwks["keys"]:
            public = {k: v for k, v in key.items() if k not in ("d", "lockgw_retire_at")}
            jwk = cjwk.JWK(**public)
            if key["crv"] == "Ed25519":
                sig[key["kid"]] = jwk
            elif key["crv"] == "X25519":
                enc = jwk
        if not sig or enc is None:
            raise ValueError(f"gateway {gw}: JWK Set needs Ed25519 and X25519 keys")
        with self._lock:
            self._gw_sig[gw] = sig
            self._gw_enc[gw] = enc

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Connect (persistent session) and subscribe to every gateway's up-topics."""
        if self._workers > 0:
            self._start_pool()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self._client.connect_async(
            self._host, self._port, keepalive=30, clean_start=False, properties=props
        )
        self._client.loop_start()
        self._ticker = threading.Thread(target=self._tick, name="platform-sim-ack", daemon=True)
        self._ticker.start()
        if not self.connected.wait(timeout):
            raise TimeoutError("platform simulator did not connect to the broker")

    def stop(self) -> None:
        """Disconnect and stop the threads."""
        self._stop.set()
        self._client.disconnect()
        self._client.loop_stop()
        if self._ticker is not None:
            self._ticker.join(5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _start_pool(self) -> None:
        with self._lock:
            pins = {
                gw: [json.loads(k.export_public()) for k in sig.values()]
                for gw, sig in self._gw_sig.items()
            }
        self._pool = ProcessPoolExecutor(
            self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(self.keys.enc.export_private(), pins),
        )
        # Start every worker now rather than on the first message.
        for future in [self._pool.submit(_worker_open, []) for _ in range(self._workers)]:
            future.result(timeout=60)
        threading.Thread(target=self._dispatch, name="platform-sim-dispatch", daemon=True).start()

    def _dispatch(self) -> None:
        pool = self._pool
        assert pool is not None
        while not self._stop.is_set():
            try:
                batch = [self._inbox.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < 64:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            self._batches.acquire()
            try:
                future = pool.submit(_worker_open, batch)
            except RuntimeError:
                self._batches.release()
                return
            future.add_done_callback(self._batch_done)

    def _batch_done(self, future: Any) -> None:
        self._batches.release()
        if future.cancelled() or future.exception() is not None:
            return
        for gw, kind, env, error in future.result():
            if env is None:
                self._count("rejected")
                log.warning("platform sim rejected a message from %s: %s", gw, error)
                continue
            try:
                self._check(env, gw, kind)
            except OpenError as exc:
                self._count("rejected")
                log.warning("platform sim rejected a message from %s: %s", gw, exc)
                continue
            self._store(gw, env)

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any = None
    ) -> None:
        if reason.is_failure:
            log.warning("platform sim connect refused: %s", reason)
            return
        client.subscribe(
            [(f"{TOPIC_ROOT}/+/{kind}", 1) for kind in ("req", "evt", "alert", "ack", "status")]
            + [(f"{TOPIC_ROOT}/+/health", 0)]
        )
        self.connected.set()

    # -- commands --------------------------------------------------------------

    def build(
        self,
        gw: str,
        msg_type: str,
        body: dict[str, Any],
        *,
        exp_s: float = 300.0,
        msg_id: str | None = None,
        envelope_gw: str | None = None,
        sig: cjwk.JWK | None = None,
        scale_photos: bool = True,
    ) -> tuple[str, str]:
        """A sealed command for ``gw``: (command id, JWE text).

        Grant photos are scaled to the contract's limits unless ``scale_photos`` is
        False (a platform that breaks the contract, for tests).
        """
        if scale_photos and msg_type == "grant.put":
            body = _fit_grant(body)
        elif scale_photos and msg_type == "grant.sync":
            body = body | {"grants": [_fit_grant(g) for g in body.get("grants", [])]}
        cmd_id = msg_id or str(uuid.uuid4())
        env = {
            "v": 1,
            "id": cmd_id,
            "type": msg_type,
            "gw": envelope_gw or gw,
            "ts": _now_iso(),
            "exp": _now_iso(exp_s),
            "body": body,
        }
        return cmd_id, seal_jw(env, sig or self.keys.sig, self._gw_enc[gw])

    def send(self, gw: str, msg_type: str, body: dict[str, Any], **kwargs: Any) -> str:
        """Build and publish a command; returns its id. TooLarge past 1 MiB (never sent)."""
        cmd_id, text = self.build(gw, msg_type, body, **kwargs)
        if len(text) > MAX_PAYLOAD_BYTES:
            raise TooLarge(f"{msg_type} is {len(text)} bytes sealed, limit {MAX_PAYLOAD_BYTES}")
        self.publish_raw(gw, text.encode())
        return cmd_id

    def build_sync(
        self, gw: str, grants: list[dict[str, Any]], *, sync_id: str | None = None
    ) -> list[tuple[str, str]]:
        """``grant.sync`` of ``grants`` as sealed parts that each fit 1 MiB: [(id, JWE)].

        One part needs no ``sync_id``/``part``/``parts``; several carry them all.
        Photos are scaled first; parts are packed greedily by sealed size.
        """
        fitted = [_fit_grant(g) for g in grants]
        whole = self.build(gw, "grant.sync", {"grants": fitted}, scale_photos=False)
        if len(whole[1]) <= MAX_PAYLOAD_BYTES:
            return [whole]
        sid = sync_id or str(uuid.uuid4())
        # Sealing grows JSON by about 16/9 (base64 twice); keep a margin for the envelope.
        budget = int((MAX_PAYLOAD_BYTES - 4096) * 9 / 16)
        chunks: list[list[dict[str, Any]]] = [[]]
        used = 0
        for grant in fitted:
            size = len(json.dumps(grant, ensure_ascii=False).encode()) + 1
            if chunks[-1] and used + size > budget:
                chunks.append([])
                used = 0
            chunks[-1].append(grant)
            used += size
        parts = len(chunks)
        built = []
        for n, chunk in enumerate(chunks, start=1):
            body = {"sync_id": sid, "part": n, "parts": parts, "grants": chunk}
            cmd_id, text = self.build(gw, "grant.sync", body, scale_photos=False)
            if len(text) > MAX_PAYLOAD_BYTES:
                raise TooLarge(f"grant.sync part {n} is {len(text)} bytes sealed")
            built.append((cmd_id, text))
        return built

    def send_sync(
        self, gw: str, grants: list[dict[str, Any]], *, sync_id: str | None = None
    ) -> list[str]:
        """Build and publish ``grant.sync`` in as many parts as it needs; their ids in order."""
        built = self.build_sync(gw, grants, sync_id=sync_id)
        for _, text in built:
            self.publish_raw(gw, text.encode())
        return [cmd_id for cmd_id, _ in built]

    def publish_raw(self, gw: str, payload: bytes) -> None:
        """Publish any bytes on the gateway's command topic (QoS 1)."""
        info = self._client.publish(f"{TOPIC_ROOT}/{gw}/cmd", payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {gw}/cmd failed: rc={info.rc}")

    def bad_command(
        self, gw: str, kind: str, *, size_limit: int = 1_048_576
    ) -> tuple[str | None, bytes]:
        """A command the gateway must reject: (id if the gateway can read it, payload)."""
        ping: dict[str, Any] = {}
        if kind == "unknown_key":
            cmd_id, text = self.build(gw, "ping", ping, sig=new_okp("Ed25519"))
            return cmd_id, text.encode()
        if kind == "tampered":
            cmd_id, text = self.build(gw, "ping", ping)
            parts = text.split(".")
            raw = bytearray(base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4)))
            raw[len(raw) // 2] ^= 0x01
            parts[3] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
            return cmd_id, ".".join(parts).encode()
        if kind == "wrong_gw":
            cmd_id, text = self.build(gw, "ping", ping, envelope_gw="other-gateway")
            return cmd_id, text.encode()
        if kind == "expired":
            cmd_id, text = self.build(gw, "ping", ping, exp_s=-60)
            return cmd_id, text.encode()
        if kind == "invalid_body":
            cmd_id, text = self.build(gw, "grant.put", {"grant_id": "g-bad", "room": "101"})
            return cmd_id, text.encode()
        if kind == "oversized":
            # Just past the payload limit, within the packet limit the gateway announces:
            # the broker forwards it, and the gateway must answer it too_large.
            pad = size_limit * 9 // 16
            while True:
                cmd_id, text = self.build(gw, "ping", {"pad": "x" * pad})
                if len(text) > size_limit:
                    return cmd_id, text.encode()
                pad += max(64, (size_limit - len(text)) * 9 // 16)
        if kind == "garbage":
            return None, secrets.token_bytes(300)
        if kind == "not_jwe":
            return None, b'{"v":1,"type":"ping"}'
        raise ValueError(f"unknown bad command kind {kind!r}")

    @staticmethod
    def grant_body(
        grant_id: str, locks: list[str], *, room: str = "101", hours: float = 24
    ) -> dict[str, Any]:
        """A well-formed grant.put body (synthetic guest data)."""
        return {
            "grant_id": grant_id,
            "room": room,
            "locks": locks,
            "valid_from": _now_iso(-60),
            "valid_until": _now_iso(hours * 3600),
            "guests": [
                {"guest_id": f"{grant_id}-g1", "id_number": "11010519491231002X", "name": "测试"}
            ],
        }

    def sync_ack(self, gw: str, through_seq: int) -> str:
        """Tell ``gw`` everything through ``through_seq`` is stored."""
        cmd_id = self.send(gw, "sync.ack", {"through_seq": through_seq})
        self.counters["sync_acks"] += 1
        return cmd_id

    # -- receiving ---------------------------------------------------------------

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) != 4:
            return
        gw, kind = parts[2], parts[3]
        if kind in ("status", "health"):
            try:
                doc = json.loads(msg.payload)
            except ValueError:
                self._count("rejected")
                return
            with self._changed:
                view = self.views.setdefault(gw, GatewayView())
                if kind == "status":
                    view.status = doc
                else:
                    view.health = doc
                self._changed.notify_all()
            return
        if self._pool is not None:
            self._inbox.put((gw, kind, bytes(msg.payload)))  # blocks when behind: backpressure
            return
        with self._lock:
            verify, enc = self._gw_sig.get(gw), self._gw_enc.get(gw)
        if verify is None or enc is None:
            self._count("rejected")
            return
        try:
            env = open_jw(msg.payload.decode("ascii", "replace"), self.keys.enc, verify)
            self._check(env, gw, kind)
        except OpenError as exc:
            self._count("rejected")
            log.warning("platform sim rejected a message from %s: %s", gw, exc)
            return
        self._store(gw, env)

    @staticmethod
    def _check(env: dict[str, Any], gw: str, kind: str) -> None:
        if env.get("v") != 1 or env.get("gw") != gw:
            raise OpenError("envelope v/gw does not match the topic")
        seq = env.get("seq")
        if not isinstance(seq, int) or seq < 1:
            raise OpenError("missing seq")
        msg_type = str(env.get("type"))
        expected = (
            "req"
            if msg_type == "eid.verify"
            else "ack"
            if msg_type == "ack"
            else "alert"
            if msg_type.startswith("alert.")
            else "evt"
        )
        if expected != kind:
            raise OpenError(f"{msg_type} on the {kind} topic")
        if not isinstance(env.get("body"), dict):
            raise OpenError("body not an object")

    def _store(self, gw: str, env: dict[str, Any]) -> None:
        seq = int(env["seq"])
        hook = self.on_message_hook
        with self._changed:
            self.counters["received"] += 1
            view = self.views.setdefault(gw, GatewayView())
            if seq in view.messages or seq <= view.prefix:
                view.duplicates += 1
                view.last_ack_at = 0.0  # re-announce progress soon
                self._changed.notify_all()
                return
            view.messages[seq] = env
            view.arrivals.append((seq, str(env["type"]), time.time()))
            view.max_seq = max(view.max_seq, seq)
            if env["type"] == "ack":
                view.acks.setdefault(str(env["body"].get("cmd_id")), []).append(env["body"])
            if env["type"] == "outbox.dropped":
                for first, last in env["body"].get("seqs", []):
                    view.dropped.update(range(int(first), int(last) + 1))
            while view.prefix + 1 in view.messages or view.prefix + 1 in view.dropped:
                view.prefix += 1
            self._changed.notify_all()
        if env["type"] == "eid.verify":
            self._eid_request(gw, env["body"], str(env["ts"]))
        if hook is not None:
            hook(gw, env)

    # -- electronic ID -------------------------------------------------------------

    def _eid_request(self, gw: str, body: dict[str, Any], sealed_at: str) -> None:
        received = time.time()
        try:
            request_id = str(body["request_id"])
            at, answer_by = _parse_iso(body["at"]), _parse_iso(body["answer_by"])
            code, face = str(body["code"]), str(body["live_jpeg_b64"])
            if not 0 < answer_by - at <= 10.0:
                raise ValueError("answer_by must be after at by at most 10 s")
            if not isinstance(body["lock"], str):
                raise ValueError("lock must be a string")
        except (KeyError, TypeError, ValueError) as exc:
            self._count("eid_bad_requests")
            log.warning("platform sim: bad eid.verify from %s: %s", gw, exc)
            return
        with self._lock:
            self.eid_requests.append(
                {"gw": gw, "received": received, "sealed_at": sealed_at, **body}
            )
        delay = self.identity.answer_delay()
        if delay is None:
            self._count("eid_unanswered")
            return
        timer = threading.Timer(
            delay, self._eid_answer, (gw, request_id, code, face, answer_by, received)
        )
        timer.daemon = True
        timer.start()

    def _eid_answer(
        self, gw: str, request_id: str, code: str, face: str, answer_by: float, received: float
    ) -> None:
        if time.time() > answer_by and not self.answer_late:
            self._count("eid_past_answer_by")
            return
        verdict = self.identity.verify(code, face)
        body = result_body(request_id, verdict)
        try:
            cmd_id = self.send(gw, "eid.result", body, exp_s=60.0)
        except (ConnectionError, KeyError) as exc:
            self._count("eid_answer_failed")
            log.warning("platform sim: eid.result to %s not sent: %s", gw, exc)
            return
        with self._lock:
            self.eid_results.append(
                {
                    "gw": gw,
                    "cmd_id": cmd_id,
                    "request_id": request_id,
                    "status": verdict.status,
                    "error": verdict.error,
                    "rtt_s": time.time() - received,
                }
            )
        self._count(f"eid_{verdict.status}")

    def _tick(self) -> None:
        while not self._stop.wait(self._ack_interval):
            if not self.auto_ack or not self._client.is_connected():
                continue
            due: list[tuple[str, int]] = []
            now = time.monotonic()
            with self._lock:
                for gw, view in self.views.items():
                    stale = now - view.last_ack_at > 2.0 and view.prefix > 0
                    if view.prefix > view.acked_prefix or (stale and view.duplicates):
                        due.append((gw, view.prefix))
                        view.acked_prefix = view.prefix
                        view.last_ack_at = now
            for gw, through in due:
                try:
                    self.sync_ack(gw, through)
                except ConnectionError:
                    with self._lock:
                        self.views[gw].acked_prefix = 0

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    # -- queries for tests ---------------------------------------------------------

    def view(self, gw: str) -> GatewayView:
        """The (live) view of one gateway."""
        with self._lock:
            return self.views.setdefault(gw, GatewayView())

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (checked under the lock at every change)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.5))
            return True

    def wait_ack(self, gw: str, cmd_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """The first ack for ``cmd_id`` (TimeoutError if none arrives)."""
        view = self.view(gw)
        if not self.wait_for(lambda: cmd_id in view.acks, timeout):
            raise TimeoutError(f"no ack for command {cmd_id}")
        return view.acks[cmd_id][0]

    def events(self, gw: str, msg_type: str | None = None) -> list[dict[str, Any]]:
        """Received gateway messages in seq order, optionally of one type."""
        with self._lock:
            view = self.views.get(gw, GatewayView())
            return [
                view.messages[s]
                for s in sorted(view.messages)
                if msg_type is None or view.messages[s]["type"] == msg_type
            ]


def _parse_iso(value: object) -> float:
    if not isinstance(value, str):
        raise ValueError("time is not a string")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main(argv: list[str] | None = None) -> int:
    """Run the simulator from a shell: pin a gateway, print what arrives."""
    parser = argparse.ArgumentParser(prog="platform-sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--gw", required=True, help="gateway id")
    parser.add_argument("--gateway-jwks", type=Path, required=True, help="gateway public JWK Set")
    parser.add_argument("--write-platform-jwks", type=Path, help="write our public JWK Set here")
    parser.add_argument("--ping", action="store_true", help="send a ping at start")
    parser.add_argument("--workers", type=int, default=0, help="worker processes that open")
    parser.add_argument(
        "--wait-jwks", type=float, default=0.0, help="seconds to wait for --gateway-jwks to appear"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"))
    keys = SimKeys()
    if args.write_platform_jwks:
        tmp = args.write_platform_jwks.with_suffix(".tmp")
        tmp.write_text(json.dumps(keys.public_jwks(), indent=2))
        tmp.replace(args.write_platform_jwks)
    deadline = time.monotonic() + args.wait_jwks
    while not args.gateway_jwks.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    sim = PlatformSim(
        args.host,
        args.port,
        {args.gw: json.loads(args.gateway_jwks.read_text())},
        keys,
        workers=args.workers,
    )
    # One JSON line per stored (deduplicated) message, with the arrival time.
    sim.on_message_hook = lambda gw, env: print(
        json.dumps({"gw": gw, "seq": env["seq"], "type": env["type"], "t": time.time()}),
        flush=True,
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    sim.start()
    if args.ping:
        sim.send(args.gw, "ping", {})
    try:
        while not stopping.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

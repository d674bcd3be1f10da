"""The MQTT 5 link to the platform: publishes the outbox, receives commands, never blocks.

One thread owns the paho client (no paho background thread): it connects with
tenacity's exponential backoff with jitter, forever, and then runs the session
with paho's external-loop API (``loop_read``/``loop_write``/``loop_misc``)
around a ``select`` that also wakes on a private socket pair, so a new outbox
message is published at once instead of at the next poll.

Session: client id ``gw-<id>``, clean start false, session expiry ≥ one week,
will message ``{"state":"offline"}`` retained on ``P/status``, retained
``online`` status after each CONNACK, ``P/health`` (QoS 0) every
``health_interval_s``. TLS (1.2 minimum) with a client certificate, or plain
TCP where configured.

Delivery: at most ``inflight_window`` sealed messages are published and not yet
PUBACKed (never more than the broker's Receive Maximum). Publish order is
requests (``P/req``), then alerts, then acks, then events, each by seq. PUBACK
is not delivery: a message leaves the outbox only on ``sync.ack``. Everything
not covered is published again after every (re)connect, and when ``sync.ack`` made no progress for
``retry_after_s`` while messages were out. A PUBACK with a failure reason code
is counted and the message is published again at the next retry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from tenacity import RetryError, Retrying, retry_if_exception_type, wait_exponential_jitter

from agent.contract.limits import PACKET_MARGIN_BYTES
from agent.contract.messages import format_time, utc_now
from agent.sync.outbox import Outbox

log = logging.getLogger(__name__)

TOPIC_ROOT = "lockgw/v1"
_STABLE_SESSION_S = 10.0  # a session shorter than this keeps the backoff growing


class LinkDown(Exception):
    """The broker could not be reached or refused the connection."""


@dataclass(frozen=True)
class LinkSettings:
    """Connection parameters (the ``[link]`` section, or given directly in tests)."""

    host: str = "127.0.0.1"
    port: int = 8883
    transport: Literal["tls", "tcp"] = "tls"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 604_800
    health_interval_s: float = 60.0
    inflight_window: int = 64
    retry_after_s: float = 30.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    max_payload_bytes: int = 1_048_576

    @classmethod
    def from_config(cls, section: Any) -> LinkSettings:
        """Build from ``agent.config.schema.LinkSection`` (any object with the same attributes)."""
        return cls(**{name: getattr(section, name) for name in cls.__dataclass_fields__})


class Link:
    """Owns the MQTT session in its own thread; ``start()`` returns at once."""

    def __init__(
        self,
        settings: LinkSettings,
        gateway_id: str,
        outbox: Outbox,
        on_command: Callable[[bytes], object],
        *,
        version: str = "0",
        health: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._s = settings
        self._gw = gateway_id
        self._outbox = outbox
        self._on_command = on_command
        self._version = version
        self._health_extra = health
        self._prefix = f"{TOPIC_ROOT}/{gateway_id}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._connected = threading.Event()
        self._client: mqtt.Client | None = None
        self._session_ok = False
        self._inflight: dict[int, int] = {}
        self._cursor: dict[int, int] = {}
        self._window = settings.inflight_window
        self._last_progress = time.monotonic()
        self._last_acked = outbox.acked_through
        self._need_rewind = False
        self._next_health = 0.0
        self._next_gap_check = 0.0
        self.counters: dict[str, int] = {
            "connects": 0,
            "connect_failures": 0,
            "disconnects": 0,
            "published": 0,
            "republish_rounds": 0,
            "puback_failures": 0,
            "commands_in": 0,
        }
        outbox.add_listener(self.wake)

    # -- public ----------------------------------------------------------------

    def start(self) -> None:
        """Start the link thread; returns immediately."""
        if self._thread is not None:
            raise RuntimeError("link already started")
        self._thread = threading.Thread(target=self._run, name="link", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` if connected, disconnect, and join the thread."""
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("link thread did not stop in time")
                return
        for sock in (self._wake_r, self._wake_w):
            sock.close()

    @property
    def running(self) -> bool:
        """True while the link thread is alive (connected or reconnecting)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def connected(self) -> bool:
        """True while a session is established."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the session is up."""
        return self._connected.wait(timeout)

    def wake(self) -> None:
        """Make the link thread look at the outbox now (callable from any thread)."""
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def health_snapshot(self) -> dict[str, Any]:
        """The ``health`` document: counters only, no personal data."""
        stats = self._outbox.stats()
        doc: dict[str, Any] = {
            "ts": format_time(utc_now()),
            "outbox_depth": stats.depth,
            "outbox_bytes": stats.bytes,
            "outbox_oldest_age_s": None
            if stats.oldest_age_s is None
            else round(stats.oldest_age_s, 1),
            "last_seq": stats.last_seq,
            "acked_through": stats.acked_through,
            "inflight": len(self._inflight),
            **self.counters,
        }
        if self._health_extra is not None:
            doc.update(self._health_extra())
        return doc

    # -- thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            retrying = Retrying(
                wait=wait_exponential_jitter(
                    multiplier=self._s.reconnect_min_s,
                    min=self._s.reconnect_min_s,
                    max=self._s.reconnect_max_s,
                    jitter=self._s.reconnect_min_s,
                ),
                retry=retry_if_exception_type(LinkDown),
                stop=lambda _state: self._stop.is_set(),
                sleep=self._sleep,
                before_sleep=self._log_retry,
            )
            try:
                retrying(self._connect_and_serve)
            except RetryError:
                break
            except Exception:
                log.exception("link thread error; reconnecting")
                self._sleep(self._s.reconnect_min_s)

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _log_retry(self, state: Any) -> None:
        self.counters["connect_failures"] += 1
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "platform link down, retrying",
            extra={
                "attempt": state.attempt_number,
                "delay_s": round(state.next_action.sleep, 2) if state.next_action else None,
                "error": str(exc),
            },
        )

    def _connect_and_serve(self) -> None:
        started = time.monotonic()
        client = self._make_client()
        self._client = client
        try:
            self._connect(client)
            self._serve(client)
        finally:
            self._connected.clear()
            self._client = None
            sock = client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        if not self._stop.is_set() and time.monotonic() - started < _STABLE_SESSION_S:
            raise LinkDown("session ended soon after connecting")

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"gw-{self._gw}", protocol=mqtt.MQTTv5
        )
        client.max_inflight_messages_set(self._s.inflight_window)
        # The will's ts is the time of the connection that registers it (contract
        # section 2): a client, and so a will, is made for every connection attempt.
        offline = json.dumps(
            {"state": "offline", "version": self._version, "ts": format_time(utc_now())}
        )
        client.will_set(f"{self._prefix}/status", offline, qos=1, retain=True)
        if self._s.transport == "tls":
            ctx = ssl.create_default_context(
                cafile=str(self._s.ca_file) if self._s.ca_file else None
            )
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if self._s.cert_file is not None:
                ctx.load_cert_chain(
                    str(self._s.cert_file),
                    str(self._s.key_file) if self._s.key_file else None,
                )
            client.tls_set_context(ctx)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _connect(self, client: mqtt.Client) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._s.session_expiry_s
        # Contract section 5: the payload limit plus 4 KiB for header, topic and
        # properties. The broker drops larger packets before they reach us; those
        # between the payload limit and this reach us and are answered too_large.
        props.MaximumPacketSize = self._s.max_payload_bytes + PACKET_MARGIN_BYTES
        self._session_ok = False
        try:
            client.connect(
                self._s.host,
                self._s.port,
                keepalive=self._s.keepalive_s,
                clean_start=False,
                properties=props,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise LinkDown(f"connect to {self._s.host}:{self._s.port} failed: {exc}") from None
        deadline = time.monotonic() + max(10.0, self._s.keepalive_s)
        while not self._session_ok:
            if self._stop.is_set():
                return
            if time.monotonic() > deadline:
                raise LinkDown("no CONNACK from the broker")
            if self._io(client, 0.2) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise LinkDown(f"connection lost before CONNACK ({self._refusal or 'closed'})")

    _refusal: str = ""

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if reason.is_failure:
            self._refusal = f"CONNACK {reason}"
            log.error("broker refused the connection", extra={"reason": str(reason)})
            return
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties else None
        self._window = min(self._s.inflight_window, receive_max or 65_535)
        client.subscribe(f"{self._prefix}/cmd", qos=1)
        online = {"state": "online", "version": self._version, "ts": format_time(utc_now())}
        client.publish(f"{self._prefix}/status", json.dumps(online), qos=1, retain=True)
        # Republish everything not yet covered by sync.ack, alerts first.
        self._inflight.clear()
        self._cursor = {}
        self._last_progress = time.monotonic()
        self._next_health = time.monotonic()
        self._session_ok = True
        self._connected.set()
        self.counters["connects"] += 1
        log.info(
            "platform link up",
            extra={"session_present": bool(getattr(flags, "session_present", False))},
        )

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None
    ) -> None:
        self._connected.clear()
        self.counters["disconnects"] += 1
        if self._stop.is_set():
            log.info("platform link closed")
        else:
            log.warning("platform link lost", extra={"reason": str(reason)})

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any = None
    ) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is not None and reason.is_failure:
            self.counters["puback_failures"] += 1
            self._need_rewind = True
            log.warning("broker refused a publish", extra={"seq": seq, "reason": str(reason)})

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != f"{self._prefix}/cmd":
            return
        self.counters["commands_in"] += 1
        try:
            self._on_command(bytes(msg.payload))
        except Exception:
            # The processor never raises on bad input; this is a bug or the store.
            log.exception("command handling failed")

    def _serve(self, client: mqtt.Client) -> None:
        while not self._stop.is_set():
            self._pump(client)
            self._timers(client)
            # select() wakes on broker traffic (PUBACKs, commands) and on enqueue.
            rc = self._io(client, 0.5)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not client.is_connected():
                log.warning("platform link session ended", extra={"rc": int(rc)})
                return
        if self._session_ok:
            self._goodbye(client)

    def _io(self, client: mqtt.Client, timeout: float) -> MQTTErrorCode:
        sock = client.socket()
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
        wlist = [sock] if client.want_write() else []
        try:
            readable, writable, _ = select.select(
                [sock, self._wake_r], wlist, [], 0.0 if pending else timeout
            )
        except (OSError, ValueError):
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        if sock in readable or pending:
            rc = client.loop_read()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and (writable or client.want_write()):
            rc = client.loop_write()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        return rc

    def _pump(self, client: mqtt.Client) -> None:
        room = self._window - len(self._inflight)
        if room <= 0 or not self._session_ok:
            return
        if self._inflight and room < max(1, self._window // 4):
            return  # refill in chunks: one outbox query per few PUBACKs, not per PUBACK
        items = self._outbox.next_batch(self._cursor, room)
        for item in items:
            info = client.publish(f"{self._prefix}/{item.kind}", item.sealed, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                log.warning("publish failed", extra={"seq": item.seq, "rc": int(info.rc)})
                return
            self._inflight[info.mid] = item.seq
            self._cursor[item.priority] = item.seq
            self.counters["published"] += 1

    def _timers(self, client: mqtt.Client) -> None:
        now = time.monotonic()
        acked = self._outbox.acked_through
        if acked != self._last_acked:
            self._last_acked = acked
            self._last_progress = now
        if now - self._last_progress >= self._s.retry_after_s:
            self._last_progress = now
            if self._cursor and self._outbox_has_uncovered_sent():
                self._rewind("no sync.ack progress")
            elif self._need_rewind:
                self._rewind("broker refused publishes")
        if now >= self._next_gap_check:
            self._next_gap_check = now + 60.0
            try:
                self._outbox.declare_due_gaps()  # a lost database's range, once salvage had time
            except Exception:
                log.exception("declaring seq gaps failed")
        if now >= self._next_health:
            self._next_health = now + self._s.health_interval_s
            try:
                doc = self.health_snapshot()
            except Exception:
                log.exception("health snapshot failed")
            else:
                client.publish(f"{self._prefix}/health", json.dumps(doc), qos=0)

    def _outbox_has_uncovered_sent(self) -> bool:
        published_max = max(self._cursor.values(), default=0)
        return published_max > self._outbox.acked_through

    def _rewind(self, why: str) -> None:
        self._cursor = {}
        self._need_rewind = False
        self.counters["republish_rounds"] += 1
        log.info("republishing messages not covered by sync.ack", extra={"why": why})

    def _goodbye(self, client: mqtt.Client) -> None:
        offline = {"state": "offline", "version": self._version, "ts": format_time(utc_now())}
        info = client.publish(f"{self._prefix}/status", json.dumps(offline), qos=1, retain=True)
        deadline = time.monotonic() + 2.0
        while not info.is_published() and time.monotonic() < deadline:
            if self._io(client, 0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = self._s.session_expiry_s
        client.disconnect(properties=props)
        self._io(client, 0.05)

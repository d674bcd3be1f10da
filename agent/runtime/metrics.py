"""Prometheus metrics of the running gateway, served on localhost only.

Nearly every series is read from the parts' own counters when Prometheus
scrapes (``GatewayCollector``), so nothing is added to the door path, the
link or the drivers. Only latencies need observations as they happen:
``Metrics.observe_outcome`` (the door flow's outcome hook) and
``Metrics.observe_face``. Each ``Metrics`` has its own registry; nothing is
put in prometheus_client's global default registry.

Labels carry lock ids, bus names, states and reasons, never personal data.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from drivers.idcard.reader import ReaderState
from drivers.osdp.events import DoorState

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from agent.door.doors import VisitOutcome
    from agent.runtime.gateway import Gateway

log = logging.getLogger(__name__)

PREFIX = "lockgw"
DECISION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
FACE_BUCKETS_S = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0)

# Counter dicts of the parts -> (series name, help). Keys not listed here are not exported;
# tests check that every key the parts count today is listed.
LINK_COUNTERS: dict[str, tuple[str, str]] = {
    "connects": ("link_connects_total", "MQTT sessions established."),
    "connect_failures": ("link_connect_failures_total", "Connection attempts that failed."),
    "disconnects": ("link_disconnects_total", "Established sessions that were lost or closed."),
    "published": ("link_published_total", "Outbox messages published (including re-sends)."),
    "republish_rounds": ("link_republish_rounds_total", "Rewinds to re-send unacked messages."),
    "puback_failures": ("link_puback_failures_total", "Publishes the broker did not accept."),
    "commands_in": ("link_messages_received_total", "Payloads received on the command topic."),
}
OUTBOX_COUNTERS: dict[str, tuple[str, str]] = {
    "enqueued": ("outbox_enqueued_total", "Messages sealed and stored for sending."),
    "dropped": ("outbox_dropped_total", "Droppable messages removed to stay under the bound."),
    "refused_at_bound": ("outbox_refused_total", "Messages refused because the outbox was full."),
    "near_full_alerts": ("outbox_near_full_alerts_total", "Near-full alerts raised."),
}
OSDP_COUNTERS: dict[str, tuple[str, str]] = {
    "frames": ("osdp_frames_total", "Well-formed OSDP frames seen on the bus."),
    "bad_frames": ("osdp_frames_rejected_total", "OSDP frames rejected (checksum, length …)."),
    "junk_bytes": ("osdp_junk_bytes_total", "Bytes on the bus outside any frame."),
    "port_losses": ("osdp_port_losses_total", "Serial port errors: the port was lost."),
    "port_reopens": ("osdp_port_reopens_total", "Serial port reopened after a loss."),
    "unlocks": ("osdp_unlocks_total", "Unlock commands sent to locks."),
    "commands_failed": ("osdp_commands_failed_total", "Commands libosdp refused."),
    "bad_events": ("osdp_events_rejected_total", "Lock events rejected as malformed."),
    "key_mismatches": ("osdp_key_mismatches_total", "Secure-channel key mismatches seen."),
    "restarts": ("osdp_restarts_total", "Restarts of the bus driver's libosdp context."),
    "callback_errors": ("osdp_callback_errors_total", "Errors raised by event callbacks."),
    "hiccups": (
        "osdp_lock_hiccups_total",
        "Lock sessions dropped and restored within offline_after_s (not reported offline).",
    ),
    "late_s": (
        "osdp_bus_late_seconds_total",
        "Seconds the bus thread ran late (not polling; not counted as the locks' silence).",
    ),
}
READER_COUNTERS: dict[str, tuple[str, str]] = {
    "commands": ("reader_commands_total", "Commands sent to the ID card reader."),
    "cards_read": ("reader_cards_read_total", "Cards read completely."),
    "bad_frames": ("reader_frames_rejected_total", "Reader frames rejected (checksum, length …)."),
    "timeouts": ("reader_timeouts_total", "Reader commands that got no answer in time."),
    "retries": ("reader_retries_total", "Reader commands retried."),
    "sam_errors": ("reader_sam_errors_total", "Security module (SAM) errors reported."),
    "bad_cards": ("reader_cards_rejected_total", "Card data rejected as malformed."),
    "port_losses": ("reader_port_losses_total", "Serial port errors: the port was lost."),
    "reconnects": ("reader_reconnects_total", "Reader connections re-established."),
}
FACE_COUNTERS: dict[str, tuple[str, str]] = {
    "requests": ("face_requests_total", "Requests to the face inference process."),
    "timeouts": ("face_timeouts_total", "Face requests that timed out (the worker restarts)."),
    "restarts": ("face_restarts_total", "Restarts of the face inference process."),
    "errors": ("face_errors_total", "Face requests that failed with an error."),
    "busy": ("face_busy_total", "Face requests refused because the worker was busy."),
    "starting": ("face_starting_total", "Face requests refused while models were loading."),
}
CAMERA_FRAMES = "frames"
CAMERA_OPENS = "opens"
DOOR_STATES = tuple(s.value for s in DoorState)
READER_STATES = tuple(s.value for s in ReaderState)
READER_UP_STATES = frozenset({ReaderState.CONNECTED.value, ReaderState.RECOVERED.value})


class MetricsError(Exception):
    """The metrics endpoint cannot be served as asked."""


@dataclass
class MetricsServer:
    """A running /metrics endpoint; ``stop()`` closes it."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def stop(self, timeout: float = 3.0) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


class Metrics:
    """The gateway's metrics: a registry with the scrape-time collector and the latencies."""

    def __init__(self, gateway: Gateway) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = GatewayCollector(gateway)
        self.registry.register(self.collector)
        self._decisions = Counter(
            "door_decisions",
            "Door decisions (card, PIN, remote) by lock, result and reason.",
            ["lock", "result", "reason"],
            namespace=PREFIX,
            registry=self.registry,
        )
        self._decision_seconds = Histogram(
            "door_decision_seconds",
            "Time from presentation to decision done (records committed, unlock sent).",
            ["result"],
            namespace=PREFIX,
            buckets=DECISION_BUCKETS_S,
            registry=self.registry,
        )
        self._face_seconds = Histogram(
            "face_verify_seconds",
            "Time of one face verification (live frame against the reference).",
            namespace=PREFIX,
            buckets=FACE_BUCKETS_S,
            registry=self.registry,
        )
        for result in ("granted", "denied"):
            self._decision_seconds.labels(result)
        self.server: MetricsServer | None = None

    def observe_outcome(self, outcome: VisitOutcome) -> None:
        """The door flow's outcome hook: count the decision, time it."""
        result = "granted" if outcome.granted else "denied"
        self._decisions.labels(outcome.lock, result, outcome.reason).inc()
        self._decision_seconds.labels(result).observe(max(0.0, outcome.elapsed_ms) / 1000)

    def observe_face(self, elapsed_ms: float) -> None:
        """One face verification took ``elapsed_ms`` (``VerifyResult.elapsed_ms``)."""
        self._face_seconds.observe(max(0.0, elapsed_ms) / 1000)

    def serve(self, host: str = "127.0.0.1", port: int = 9108) -> MetricsServer:
        """Serve /metrics on a loopback address; refuses any other address."""
        check_loopback(host)
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
        bound = int(server.server_address[1])
        log.info("metrics served", extra={"host": host, "port": bound})
        self.server = MetricsServer(host, bound, server, thread)
        return self.server

    def stop(self) -> None:
        """Stop serving, if serving."""
        if self.server is not None:
            self.server.stop()
            self.server = None


def start_metrics(gateway: Gateway, port: int, host: str = "127.0.0.1") -> Metrics | None:
    """The daemon's wiring: metrics for ``gateway``, fed by its door flow, served on ``port``.

    None (logged as an error) when the endpoint cannot be served: the doors do
    not depend on metrics, so the daemon runs on without them. ``stop()`` it on
    shutdown.
    """
    metrics = Metrics(gateway)
    try:
        metrics.serve(host, port)
    except MetricsError as exc:
        log.error("metrics not served", extra={"error": str(exc)})
        return None
    gateway.flow.outcome_observers.append(metrics.observe_outcome)
    gateway.flow.face_observers.append(metrics.observe_face)
    return metrics


def check_loopback(host: str) -> None:
    """Raise ``MetricsError`` unless ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise MetricsError(
            f"metrics address {host!r} is not an IP address; use 127.0.0.1"
        ) from None
    if not address.is_loopback:
        raise MetricsError(
            f"metrics address {host} is not a loopback address; "
            "metrics are served on localhost only (127.0.0.1 or ::1)"
        )


class GatewayCollector(Collector):
    """Reads the live counters and states of a ``Gateway`` at scrape time.

    Called from the HTTP server's thread: it only copies counters and takes
    snapshots the parts offer for other threads. A section that fails is left
    out of that scrape and counted in ``lockgw_metrics_collect_errors_total``.
    """

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway
        self._errors: dict[str, int] = {}
        self._errors_lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        """Every gateway series, section by section."""
        sections: list[tuple[str, Callable[[], Iterable[Metric]]]] = [
            ("gateway", self._gateway),
            ("doors", self._doors),
            ("locks", self._locks),
            ("osdp", self._osdp),
            ("readers", self._readers),
            ("cameras", self._cameras),
            ("face", self._face),
            ("outbox", self._outbox),
            ("link", self._link),
            ("commands", self._commands),
            ("grants", self._grants),
            ("clock", self._clock),
        ]
        for name, section in sections:
            try:
                # Materialise first: a section that fails half-way adds nothing.
                metrics = list(section())
            except Exception as exc:
                log.warning(
                    "metrics section failed",
                    extra={"section": name, "error": f"{type(exc).__name__}: {exc}"},
                )
                with self._errors_lock:
                    self._errors[name] = self._errors.get(name, 0) + 1
                continue
            yield from metrics
        errors = _counter("metrics_collect_errors", "Scrapes where a section failed.", ["section"])
        with self._errors_lock:
            for name, _ in sections:
                errors.add_metric([name], self._errors.get(name, 0))
        yield errors

    # -- sections ------------------------------------------------------------------

    def _gateway(self) -> Iterator[Metric]:
        info = _gauge("info", "The gateway's id and software version.", ["gateway", "version"])
        info.add_metric([self._gw.config.gateway.id, __version__], 1)
        yield info
        yield _gauge(
            "start_time_seconds", "When the daemon started (Unix time).", value=self._gw.started_at
        )

    def _doors(self) -> Iterator[Metric]:
        counters = dict(self._gw.flow.counters)
        yield _counter(
            "door_unlock_failures",
            "Recorded openings whose unlock command the lock did not take.",
            value=counters.get("unlock_failed", 0),
        )
        yield _counter(
            "lock_events_unknown_lock",
            "Lock events from an address no door is configured for.",
            value=counters.get("events_unknown_lock", 0),
        )

    def _locks(self) -> Iterator[Metric]:
        labels = ["lock", "bus"]
        online = _gauge("lock_online", "1 while the lock answers its polls.", labels)
        secure = _gauge("lock_secure_channel", "1 while the secure channel is active.", labels)
        tamper = _gauge("lock_tamper", "1 while the lock reports tamper.", labels)
        mismatch = _gauge("lock_key_mismatch", "1 when the lock refused our key.", labels)
        unlocked = _gauge("lock_unlocked", "1 while the relay is energised.", labels)
        state = _gauge("door_state", "1 for the door's current state.", ["lock", "state"])
        snapshots = {
            name: {s.address: s for s in bus.snapshot()} for name, bus in self._gw.buses.items()
        }
        for door in self._gw.config.doors:
            # A configured lock missing from its bus (no key, bus not started) is offline.
            snap = snapshots.get(door.bus, {}).get(door.address)
            values = [door.id, door.bus]
            online.add_metric(values, _flag(snap is not None and snap.online))
            secure.add_metric(values, _flag(snap is not None and snap.sc_active))
            tamper.add_metric(values, _flag(snap is not None and snap.tamper))
            mismatch.add_metric(values, _flag(snap is not None and snap.key_mismatch))
            unlocked.add_metric(values, _flag(snap is not None and snap.unlocked))
            current = "unknown" if snap is None else str(snap.door_state.value)
            for name in DOOR_STATES:
                state.add_metric([door.id, name], _flag(name == current))
        yield from (online, secure, tamper, mismatch, unlocked, state)

    def _osdp(self) -> Iterator[Metric]:
        port_up = _gauge("osdp_port_up", "1 while the bus's serial port is open.", ["bus"])
        families = _families(OSDP_COUNTERS, ["bus"])
        for name, bus in sorted(self._gw.buses.items()):
            port_up.add_metric([name], _flag(bus.port_ok))
            _fill(families, [name], asdict(bus.stats))
        yield port_up
        yield from families.values()

    def _readers(self) -> Iterator[Metric]:
        up = _gauge("reader_up", "1 while the ID card reader is connected.", ["lock"])
        state = _gauge("reader_state", "1 for the reader's current state.", ["lock", "state"])
        families = _families(READER_COUNTERS, ["lock"])
        for lock, reader in sorted(self._gw.readers.items()):
            current = reader.state.value
            up.add_metric([lock], _flag(current in READER_UP_STATES))
            for name in READER_STATES:
                state.add_metric([lock, name], _flag(name == current))
            _fill(families, [lock], asdict(reader.stats))
        yield up
        yield state
        yield from families.values()

    def _cameras(self) -> Iterator[Metric]:
        frames = _counter("camera_frames", "Frames read from the door camera.", ["lock"])
        opens = _counter("camera_opens", "Times the camera device was opened.", ["lock"])
        misses = _counter("camera_misses", "Reads that gave no frame, by cause.", ["lock", "cause"])
        for lock, camera in sorted(self._gw.cameras.items()):
            stats: Mapping[str, int] = dict(getattr(camera, "stats", {}) or {})
            frames.add_metric([lock], stats.get(CAMERA_FRAMES, 0))
            if CAMERA_OPENS in stats:
                opens.add_metric([lock], stats[CAMERA_OPENS])
            for cause, count in sorted(stats.items()):
                if cause not in (CAMERA_FRAMES, CAMERA_OPENS):
                    misses.add_metric([lock, cause], count)
        yield from (frames, opens, misses)

    def _face(self) -> Iterator[Metric]:
        face = self._gw.face
        if face is None:
            return
        families = _families(FACE_COUNTERS, [])
        _fill(families, [], face.stats())
        yield from families.values()
        rss = face.rss_bytes()
        if rss is not None:
            yield _gauge(
                "face_worker_resident_memory_bytes",
                "Resident memory of the face inference process.",
                value=rss,
            )

    def _outbox(self) -> Iterator[Metric]:
        outbox = self._gw.outbox
        stats = outbox.stats()
        yield _gauge(
            "outbox_depth_messages", "Messages waiting for the platform's ack.", value=stats.depth
        )
        yield _gauge("outbox_bytes", "Bytes of sealed messages waiting.", value=stats.bytes)
        yield _gauge(
            "outbox_max_bytes",
            "The configured outbox bound.",
            value=self._gw.config.outbox.max_bytes,
        )
        yield _gauge(
            "outbox_oldest_age_seconds",
            "Age of the oldest waiting message (0 when empty).",
            value=stats.oldest_age_s or 0.0,
        )
        yield _gauge(
            "outbox_last_seq", "The newest sequence number given out.", value=stats.last_seq
        )
        yield _gauge(
            "outbox_acked_seq",
            "The platform has acknowledged every seq up to this.",
            value=stats.acked_through,
        )
        families = _families(OUTBOX_COUNTERS, [])
        _fill(families, [], dict(outbox.counters))
        yield from families.values()

    def _link(self) -> Iterator[Metric]:
        link = self._gw.link
        counters = dict(link.counters)
        yield _gauge(
            "link_up",
            "1 while the MQTT session to the platform is up.",
            value=_flag(link.connected),
        )
        yield _counter(
            "link_reconnects",
            "Sessions established after the first one.",
            value=max(0, counters.get("connects", 0) - 1),
        )
        families = _families(LINK_COUNTERS, [])
        _fill(families, [], counters)
        yield from families.values()
        last_sync = _timestamp(self._gw.processor.last_sync_at)
        if last_sync is not None:
            yield _gauge(
                "link_last_sync_timestamp_seconds",
                "When the platform's last sync.ack was applied (Unix time).",
                value=last_sync,
            )

    def _commands(self) -> Iterator[Metric]:
        counters = dict(self._gw.processor.counters)
        yield _counter(
            "commands_received",
            "Payloads handed to the command processor.",
            value=counters.get("received", 0),
        )
        yield _counter(
            "commands_applied", "Commands verified and applied.", value=counters.get("applied", 0)
        )
        yield _counter(
            "commands_synced", "sync.ack messages applied.", value=counters.get("synced", 0)
        )
        rejected = _counter(
            "commands_rejected",
            "Commands verified but refused (replay, expired, refused …), by reason.",
            ["reason"],
        )
        dropped = _counter(
            "commands_dropped",
            "Payloads dropped unanswered (bad seal, signature, shape), by reason.",
            ["reason"],
        )
        for key, count in sorted(counters.items()):
            if key.startswith("rejected_"):
                rejected.add_metric([key.removeprefix("rejected_")], count)
            elif key.startswith("dropped_"):
                dropped.add_metric([key.removeprefix("dropped_")], count)
        yield rejected
        yield dropped

    def _grants(self) -> Iterator[Metric]:
        counts = self._gw.grants.counts(self._gw.clock.now())
        yield _gauge("grants_stored", "Grants held in the store.", value=counts.grants)
        yield _gauge("grants_active", "Grants in force now.", value=counts.active)
        yield _gauge("grant_guests", "Guests of the stored grants.", value=counts.guests)
        yield _gauge(
            "grant_templates_ready",
            "Guests with a face template ready.",
            value=counts.templates_ready,
        )

    def _clock(self) -> Iterator[Metric]:
        state = self._gw.clock.state()
        yield _gauge(
            "clock_system_behind_seconds",
            "How far the system clock is behind trusted time (0 when not behind).",
            value=state.behind_s,
        )
        yield _gauge(
            "clock_system_ahead_seconds",
            "How far the system clock is ahead of trusted time, not believed (0 when not).",
            value=state.ahead_s,
        )
        mode = GaugeMetricFamily(
            f"{PREFIX}_clock_mode",
            "What trusted time is doing: 1 for the current mode (ok, restarted, wall_behind, "
            "wall_ahead, never_synced).",
            labels=["state"],
        )
        mode.add_metric([state.mode], 1.0)
        yield mode
        if state.last_contact is not None:
            yield _gauge(
                "clock_last_contact_timestamp_seconds",
                "When the platform was last heard from (trusted Unix time).",
                value=state.last_contact,
            )


# -- helpers ---------------------------------------------------------------------------


def _gauge(
    name: str, documentation: str, labels: list[str] | None = None, *, value: float | None = None
) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value, labels=labels)


def _counter(
    name: str, documentation: str, labels: list[str] | None = None, *, value: float | None = None
) -> CounterMetricFamily:
    # CounterMetricFamily adds the ``_total`` suffix itself.
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, value=value, labels=labels)


def _families(
    table: Mapping[str, tuple[str, str]], labels: list[str]
) -> dict[str, CounterMetricFamily]:
    return {
        key: _counter(name.removesuffix("_total"), documentation, labels)
        for key, (name, documentation) in table.items()
    }


def _fill(
    families: Mapping[str, CounterMetricFamily], labels: list[str], values: Mapping[str, Any]
) -> None:
    for key, family in families.items():
        family.add_metric(labels, float(values.get(key, 0)))


def _flag(value: bool) -> int:
    return 1 if value else 0


def _timestamp(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return dt.datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None

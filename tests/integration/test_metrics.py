"""Prometheus metrics: the series a scrape shows follow the gateway's real counters and
states; latencies are observed; the endpoint is served on loopback only; and, end to end,
``lockgw run`` with ``[metrics] enabled`` serves them while a card is presented."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import socket
import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.config.schema import load_config
from agent.door.doors import VisitOutcome
from agent.runtime.gateway import Gateway, build_gateway
from agent.runtime.metrics import (
    FACE_COUNTERS,
    LINK_COUNTERS,
    OSDP_COUNTERS,
    OUTBOX_COUNTERS,
    READER_COUNTERS,
    Metrics,
    MetricsError,
    check_loopback,
    start_metrics,
)
from agent.state.store import Store
from drivers.idcard.reader import ReaderStats
from drivers.osdp.bus import BusStats

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition text, keyed by (name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"series {name}{labels} missing from the scrape"
    return samples[key]


def scrape(metrics: Metrics) -> Samples:
    return parse(generate_latest(metrics.registry).decode())


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def gateway(write_config: Callable[..., Path], tmp_path: Path) -> Iterator[Gateway]:
    """A real gateway (nothing started): one OSDP bus with two locks, one door with a reader
    on a pseudo-terminal nobody answers on."""
    master, slave = os.openpty()
    config = load_config(
        write_config(
            "\n[[buses]]\n"
            f'name = "bus0"\nport = "{tmp_path / "no-such-bus"}"\nsecure_channel = false\n'
            "\n[[doors]]\n"
            f'id = "L101"\nbus = "bus0"\naddress = 1\nreader_port = "{os.ttyname(slave)}"\n'
            '\n[[doors]]\nid = "L102"\nbus = "bus0"\naddress = 2\n'
        )
    )
    config.gateway.state_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(config.db_path)
    loop = asyncio.new_event_loop()
    gw = build_gateway(config, store, loop)
    try:
        yield gw
    finally:
        for reader in gw.readers.values():
            reader.stop(3.0)
        with contextlib.suppress(sqlite3.ProgrammingError):  # a test may have closed it
            store.close()
        loop.close()
        os.close(master)
        os.close(slave)


def test_scrape_follows_the_gateways_counters_and_states(gateway: Gateway) -> None:
    metrics = Metrics(gateway)
    before = scrape(metrics)
    assert value(before, "lockgw_outbox_depth_messages") == 0
    assert value(before, "lockgw_link_up") == 0
    assert value(before, "lockgw_lock_online", lock="L101", bus="bus0") == 0
    assert value(before, "lockgw_door_state", lock="L102", state="unknown") == 1
    assert value(before, "lockgw_door_state", lock="L102", state="closed") == 0
    assert value(before, "lockgw_info", gateway="test-gw-01", version=_version()) == 1

    at = "2026-01-01T00:00:00Z"
    for state in ("open", "closed", "open"):
        gateway.outbox.enqueue("door.state", {"lock": "L101", "state": state, "at": at})
    gateway.processor.handle(b"this is not a sealed command")
    gateway.link.counters["connects"] += 3
    gateway.link.counters["published"] += 7
    gateway.buses["bus0"].stats.bad_frames += 4
    gateway.buses["bus0"].stats.port_losses += 1

    after = scrape(metrics)
    assert value(after, "lockgw_outbox_depth_messages") == 3
    assert value(after, "lockgw_outbox_bytes") > 0
    assert value(after, "lockgw_outbox_last_seq") == 3
    assert value(after, "lockgw_outbox_acked_seq") == 0
    assert value(after, "lockgw_outbox_enqueued_total") == 3
    assert value(after, "lockgw_commands_received_total") == 1
    dropped = {
        dict(labels)["reason"]: v
        for (name, labels), v in after.items()
        if name == "lockgw_commands_dropped_total"
    }
    assert sum(dropped.values()) == 1, dropped
    assert value(after, "lockgw_link_connects_total") == 3
    assert value(after, "lockgw_link_reconnects_total") == 2
    assert value(after, "lockgw_link_published_total") == 7
    assert value(after, "lockgw_osdp_frames_rejected_total", bus="bus0") == 4
    assert value(after, "lockgw_osdp_port_losses_total", bus="bus0") == 1
    assert value(after, "lockgw_osdp_port_up", bus="bus0") == 0
    assert value(after, "lockgw_grants_stored") == 0
    assert value(after, "lockgw_metrics_collect_errors_total", section="outbox") == 0


def test_a_reader_nobody_answers_shows_down_with_timeouts(gateway: Gateway) -> None:
    metrics = Metrics(gateway)
    assert value(scrape(metrics), "lockgw_reader_up", lock="L101") == 0
    gateway.readers["L101"].start()
    wait_for(
        lambda: (
            scrape(metrics).get(
                ("lockgw_reader_state", frozenset({("lock", "L101"), ("state", "not_responding")}))
            )
            == 1
        ),
        timeout=30,
        what="the reader to be reported not responding",
    )
    samples = scrape(metrics)
    assert value(samples, "lockgw_reader_up", lock="L101") == 0
    assert value(samples, "lockgw_reader_timeouts_total", lock="L101") >= 1
    assert value(samples, "lockgw_reader_commands_total", lock="L101") >= 1


def test_decisions_are_counted_and_timed(gateway: Gateway) -> None:
    metrics = Metrics(gateway)
    metrics.observe_outcome(VisitOutcome("L101", True, "card_and_face", "", (5, 6), 420.0))
    metrics.observe_outcome(VisitOutcome("L101", False, "face_mismatch", "", (7,), 900.0))
    metrics.observe_outcome(VisitOutcome("L102", False, "no_grant", "", (8,), 12.0))
    metrics.observe_outcome(VisitOutcome("L102", False, "no_grant", "", (9,), 3.0))
    metrics.observe_face(180.0)
    metrics.observe_face(650.0)
    s = scrape(metrics)
    decisions = "lockgw_door_decisions_total"
    assert value(s, decisions, lock="L101", result="granted", reason="card_and_face") == 1
    assert value(s, decisions, lock="L101", result="denied", reason="face_mismatch") == 1
    assert value(s, decisions, lock="L102", result="denied", reason="no_grant") == 2
    assert value(s, "lockgw_door_decision_seconds_count", result="denied") == 3
    assert value(s, "lockgw_door_decision_seconds_count", result="granted") == 1
    assert value(s, "lockgw_door_decision_seconds_sum", result="granted") == pytest.approx(0.42)
    assert value(s, "lockgw_door_decision_seconds_bucket", result="denied", le="0.005") == 1
    assert value(s, "lockgw_door_decision_seconds_bucket", result="denied", le="0.5") == 2
    assert value(s, "lockgw_face_verify_seconds_count") == 2
    assert value(s, "lockgw_face_verify_seconds_bucket", le="0.2") == 1
    assert value(s, "lockgw_face_verify_seconds_bucket", le="0.4") == 1
    assert value(s, "lockgw_face_verify_seconds_bucket", le="+Inf") == 2


def test_a_failing_section_is_left_out_and_counted(gateway: Gateway) -> None:
    metrics = Metrics(gateway)
    gateway.store.close()  # the outbox and grants can no longer be read
    s = scrape(metrics)
    assert ("lockgw_outbox_depth_messages", frozenset()) not in s
    assert value(s, "lockgw_metrics_collect_errors_total", section="outbox") == 1
    assert value(s, "lockgw_link_up") == 0, "the other sections are still there"


def test_every_counter_the_parts_keep_is_exported(gateway: Gateway) -> None:
    """A counter added to a part without a series here fails this test."""
    assert set(LINK_COUNTERS) == set(gateway.link.counters)
    assert set(OUTBOX_COUNTERS) == set(gateway.outbox.counters)
    assert set(OSDP_COUNTERS) == {f.name for f in dataclasses.fields(BusStats)}
    assert set(READER_COUNTERS) == {f.name for f in dataclasses.fields(ReaderStats)}
    assert set(FACE_COUNTERS) == {
        "requests",
        "timeouts",
        "restarts",
        "errors",
        "busy",
        "starting",
    }


def test_no_personal_data_or_unbounded_values_in_labels(gateway: Gateway) -> None:
    metrics = Metrics(gateway)
    metrics.observe_outcome(VisitOutcome("L101", False, "no_grant", "", (1,), 5.0))
    allowed = {"lock", "bus", "state", "result", "reason", "section", "le", "cause"}
    allowed |= {"gateway", "version"}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        assert family.name.startswith("lockgw_"), family.name
        for sample in family.samples:
            assert set(sample.labels) <= allowed, (sample.name, sample.labels)


class _StubFace:
    def stats(self) -> dict[str, int]:
        return dict.fromkeys(FACE_COUNTERS, 2)

    def rss_bytes(self) -> int:
        return 123_000_000


class _StubCamera:
    stats = {"opens": 1, "open_failures": 2, "drops": 3, "frames": 40}  # noqa: RUF012


def test_docs_list_exactly_the_series_served(gateway: Gateway, repo_root: Path) -> None:
    gateway.face = _StubFace()
    gateway.cameras = {"L101": _StubCamera()}  # type: ignore[dict-item]
    gateway.processor.last_sync_at = "2026-01-01T00:00:00Z"
    gateway.clock.observe_trusted(time.time())
    metrics = Metrics(gateway)
    metrics.observe_outcome(VisitOutcome("L101", False, "no_grant", "", (1,), 5.0))
    served = set()
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        if family.name.endswith("_created"):
            continue
        served.add(family.name + ("_total" if family.type == "counter" else ""))
    text = (repo_root / "docs" / "metrics.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(lockgw_[a-z_]+)`", text, re.MULTILINE))
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"
    s = scrape(metrics)
    assert value(s, "lockgw_camera_misses_total", lock="L101", cause="drops") == 3
    assert value(s, "lockgw_face_timeouts_total") == 2


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.org", ""])
def test_a_non_loopback_address_is_refused(gateway: Gateway, host: str) -> None:
    with pytest.raises(MetricsError, match=r"loopback|not an IP address"):
        Metrics(gateway).serve(host, _free_port())


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_addresses_are_accepted(host: str) -> None:
    check_loopback(host)


def test_serves_over_http_and_stops(gateway: Gateway) -> None:
    metrics = Metrics(gateway)
    server = metrics.serve("127.0.0.1", 0)
    try:
        body = _get(f"http://127.0.0.1:{server.port}/metrics")
        assert value(parse(body), "lockgw_outbox_depth_messages") == 0
    finally:
        server.stop()
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{server.port}/metrics", timeout=2)


def test_a_port_in_use_is_a_clear_error(gateway: Gateway) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsError, match=re.escape(f"127.0.0.1:{port}")):
            Metrics(gateway).serve("127.0.0.1", port)


def test_start_metrics_counts_the_flows_decisions_and_keeps_its_hook(gateway: Gateway) -> None:
    metrics = start_metrics(gateway, 0)
    assert metrics is not None and metrics.server is not None
    try:
        # The lock's bus is not running: the recorded opening fails at the lock.
        outcome = asyncio.run(gateway.flow.remote_unlock("L102", 1.0, "metrics test"))
        s = parse(_get(f"http://127.0.0.1:{metrics.server.port}/metrics"))
    finally:
        metrics.stop()
    assert value(s, "lockgw_door_decisions_total", lock="L102", result="granted", reason="remote")
    assert value(s, "lockgw_door_unlock_failures_total") == 1
    assert value(s, "lockgw_outbox_enqueued_total") == 2, "door.opened, then door.unlock_failed"
    assert gateway.outcomes == [outcome], "the gateway's own outcome hook still runs"


def test_a_failing_metrics_hook_does_not_disturb_the_door(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Metrics, outcome: VisitOutcome) -> None:
        raise RuntimeError("metrics broke")

    monkeypatch.setattr(Metrics, "observe_outcome", broken)
    metrics = start_metrics(gateway, 0)
    assert metrics is not None
    try:
        outcome = asyncio.run(gateway.flow.remote_unlock("L102", 1.0, "metrics test"))
    finally:
        metrics.stop()
    assert outcome.granted and gateway.outcomes == [outcome]


def test_start_metrics_on_a_taken_port_logs_and_gives_none(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert start_metrics(gateway, taken.getsockname()[1]) is None
    assert any(r.getMessage() == "metrics not served" for r in caplog.records)


# -- helpers ------------------------------------------------------------------------------


def _version() -> str:
    from agent import __version__

    return __version__


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


# -- end to end ---------------------------------------------------------------------------


def test_lockgw_run_serves_metrics_that_follow_the_building(tmp_path: Path) -> None:
    """The real daemon on the simulated building (no cameras): scrape, present a card the
    platform never granted, unlock remotely, scrape again; the endpoint closes with the daemon."""
    from firmware_sim.site import SimulatedSite
    from tests.support.e2e import make_guest, present

    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    site = SimulatedSite(
        ["L101"],
        tmp_path / "site",
        config_overrides={"metrics": {"enabled": True, "port": port}, "doors": {"camera": None}},
    )
    site.start()
    try:
        building = site.building

        def live() -> Samples:
            return parse(_get(url))

        def ready() -> bool:
            s = live()
            return (
                s.get(("lockgw_lock_online", frozenset({("lock", "L101"), ("bus", "bus0")}))) == 1
                and s.get(("lockgw_reader_up", frozenset({("lock", "L101")}))) == 1
                and s.get(("lockgw_door_state", frozenset({("lock", "L101"), ("state", "closed")})))
                == 1
            )

        wait_for(
            ready,
            timeout=60,
            what="the lock (door closed) and the reader to show up in the metrics",
        )
        s = live()
        assert value(s, "lockgw_link_up") == 1
        assert value(s, "lockgw_lock_secure_channel", lock="L101", bus="bus0") == 1
        assert value(s, "lockgw_osdp_port_up", bus="bus0") == 1
        assert ("lockgw_face_requests_total", frozenset()) not in s, "no cameras, no face worker"

        nobody = make_guest(None)
        mark = present(site, "L101", nobody.card, None)
        denied = building.platform.wait_for_event("access.denied", after_seq=mark)
        cmd = building.platform.remote_unlock("L101", seconds=1, reason="metrics test")
        assert building.platform.wait_ack(cmd)["status"] == "ok"
        assert building.wait_relay("L101", True, timeout=10)

        def settled() -> bool:
            s = live()
            return (
                s.get(("lockgw_outbox_depth_messages", frozenset())) == 0
                and s.get(("lockgw_outbox_acked_seq", frozenset()), 0) >= denied["seq"]
            )

        wait_for(settled, timeout=60, what="the platform to acknowledge the outbox")
        s = live()
        decisions = "lockgw_door_decisions_total"
        assert value(s, decisions, lock="L101", result="denied", reason="no_grant") == 1
        assert value(s, decisions, lock="L101", result="granted", reason="remote") == 1
        assert value(s, "lockgw_door_decision_seconds_count", result="denied") == 1
        assert value(s, "lockgw_door_decision_seconds_count", result="granted") == 1
        assert value(s, "lockgw_reader_cards_read_total", lock="L101") >= 1
        assert value(s, "lockgw_osdp_unlocks_total", bus="bus0") >= 1
        assert value(s, "lockgw_commands_applied_total") >= 1
        assert value(s, "lockgw_outbox_enqueued_total") >= 2
        assert value(s, "lockgw_outbox_last_seq") >= denied["seq"]
        assert value(s, "lockgw_link_published_total") >= 2
        assert value(s, "lockgw_osdp_frames_rejected_total", bus="bus0") == 0

        assert site.stop_daemon() == 0
        with pytest.raises(OSError):
            _get(url, timeout=2)
    finally:
        site.stop()

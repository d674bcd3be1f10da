"""Commands against trusted time: a ts far ahead is refused and moves nothing; replays stay dead.

The platform simulator signs real commands; the gateway's clocks are injected, so
the attacker's moves (setting the wall clock, a platform ts skewed) are exact.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.state.clock import DEFAULT_MAX_SKEW_S, ClockGuard
from agent.sync.commands import REPLAY_MARGIN_S, REPLAY_WINDOW_S, CommandProcessor
from firmware_sim.platform import PlatformSim
from tests.support.clocks import SettableClocks
from tests.unit.sync.test_commands import GW, ID_NUMBER, Rig

DAY = 86_400.0


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Rig, SettableClocks, ClockGuard]]:
    rig = Rig(tmp_path)
    clocks = SettableClocks()
    guard = ClockGuard(rig.store, max_ahead_s=72 * 3600, sources=clocks)
    rig.proc = CommandProcessor(
        rig.store,
        rig.outbox,
        GW,
        rig.gw_keys,
        rig.pf_keys,
        rig.applier,
        now=lambda: dt.datetime.fromtimestamp(guard.now(), dt.UTC),
        on_verified=guard.observe_trusted,
    )
    rig.send("ping", {})
    yield rig, clocks, guard
    rig.store.close()


def test_a_command_stamped_30_days_ahead_is_refused_and_time_does_not_move(
    rig: tuple[Rig, SettableClocks, ClockGuard],
) -> None:
    gw, _clocks, guard = rig
    before = guard.now()
    cmd_id, outcome = gw.send(
        "grant.put", PlatformSim.grant_body("g-1", ["door-1"]), ts_offset_s=30 * DAY
    )
    assert (outcome.status, outcome.reason) == ("rejected", "clock_skew")
    ack = gw.acks()[cmd_id]
    assert ack["status"] == "rejected" and ack["error"].startswith("clock_skew: ")
    assert guard.now() - before < 5
    assert gw.grant_ids() == []
    # the next, honest grant is in force now, not already ended
    _cmd, outcome = gw.send("grant.put", PlatformSim.grant_body("g-2", ["door-1"]))
    assert outcome.status == "ok"
    [guest] = gw.grants.guests_for_card(ID_NUMBER)
    assert guest.valid_from <= guard.now() < guest.valid_until


def test_a_ts_within_the_skew_is_accepted(rig: tuple[Rig, SettableClocks, ClockGuard]) -> None:
    gw, _clocks, guard = rig
    _cmd, outcome = gw.send("ping", {}, ts_offset_s=DEFAULT_MAX_SKEW_S / 2)
    assert outcome.status == "ok"
    assert guard.now() >= time.time() + DEFAULT_MAX_SKEW_S / 2 - 5


def test_a_captured_unlock_replayed_after_a_clock_excursion_stays_dead(
    rig: tuple[Rig, SettableClocks, ClockGuard],
) -> None:
    gw, clocks, _guard = rig
    cmd_id, text = gw.sim.build(
        GW, "lock.unlock", {"lock": "door-1", "seconds": 3, "reason": "host"}, exp_s=600
    )
    assert gw.proc.handle(text.encode()).status == "ok"
    assert len(gw.unlocks) == 1
    clocks.wall_now += 3 * 365 * DAY  # the attacker runs the wall clock years ahead
    assert gw.proc.prune() == 0  # pruned only by trusted time: the id stays
    clocks.wall_now -= 3 * 365 * DAY + DAY  # and back, past the command's ts
    again = gw.proc.handle(text.encode())
    assert again.status == "rejected" and again.reason == "replayed"
    assert len(gw.unlocks) == 1
    # Only once trusted time is really past exp + margin does the id go, and then the
    # command is expired by that same trusted time.
    clocks.wall_now += DAY + 600 + REPLAY_MARGIN_S + 60
    clocks.boot_now += 600 + REPLAY_MARGIN_S + 60
    assert gw.proc.prune() == 2  # the fixture's ping and the unlock
    late = gw.proc.handle(text.encode())
    assert (late.status, late.reason) == ("rejected", "expired")
    assert len(gw.unlocks) == 1
    assert cmd_id in gw.acks()


def test_a_command_older_than_the_replay_window_is_refused(
    rig: tuple[Rig, SettableClocks, ClockGuard],
) -> None:
    gw, _clocks, _guard = rig
    _cmd, outcome = gw.send(
        "ping", {}, ts_offset_s=-(REPLAY_WINDOW_S + DAY), exp_s=REPLAY_WINDOW_S + 2 * DAY
    )
    assert (outcome.status, outcome.reason) == ("rejected", "expired")

"""Warning rules: each raises its alert, each can be switched off, windows slide."""

from __future__ import annotations

from agent.door.alerts import AlertPolicy, AlertRules

AT = "2026-11-22T10:00:00.000Z"


def types(alerts: list[tuple[str, dict[str, object]]]) -> list[str]:
    return [t for t, _ in alerts]


def test_each_rule_raises_its_alert() -> None:
    rules = AlertRules(AlertPolicy())
    assert types(rules.on_identity_mismatch("L1", AT, {"grant_id": "g"})) == [
        "alert.identity_mismatch"
    ]
    assert types(rules.on_occupants("L1", AT, 3, 1, "g")) == ["alert.unregistered_occupant"]
    assert rules.on_occupants("L1", AT, 1, 1, "g") == []
    assert types(rules.on_door_state("L1", AT, "forced")) == ["alert.door_forced"]
    assert types(rules.on_door_state("L1", AT, "held_open")) == ["alert.door_held_open"]
    assert rules.on_door_state("L1", AT, "open") == []
    assert types(rules.on_lock_status("L1", AT, True, True, True, False)) == ["alert.tamper"]
    assert types(rules.on_lock_status("L1", AT, False, False, True, False)) == [
        "alert.lock_offline"
    ]
    assert rules.on_lock_status("L1", AT, False, True, False, True) == [], "no repeats"


def test_every_rule_can_be_switched_off() -> None:
    off = AlertRules(
        AlertPolicy(
            identity_mismatch=False,
            unregistered_occupant=False,
            door_forced=False,
            door_held_open=False,
            tamper=False,
            lock_offline=False,
        )
    )
    assert off.on_identity_mismatch("L1", AT, {}) == []
    assert off.on_occupants("L1", AT, 3, 1, None) == []
    assert off.on_door_state("L1", AT, "forced") == []
    assert off.on_door_state("L1", AT, "held_open") == []
    assert off.on_lock_status("L1", AT, False, True, True, False) == []


def test_brute_force_counts_denials_per_door_within_the_window() -> None:
    rules = AlertRules(AlertPolicy(brute_force_count=3, brute_force_window_s=60))
    assert rules.on_denial("L1", AT, 0, "no_grant") == []
    assert rules.on_denial("L2", AT, 1, "no_grant") == [], "another door counts apart"
    assert rules.on_denial("L1", AT, 70, "no_grant") == [], "the first fell out of the window"
    assert rules.on_denial("L1", AT, 80, "face_mismatch") == []
    (alert,) = rules.on_denial("L1", AT, 90, "face_mismatch")
    assert alert[0] == "alert.brute_force" and alert[1]["failures"] == 3


def test_repeated_unknown_card_is_tracked_by_hash_and_shown_masked() -> None:
    rules = AlertRules(AlertPolicy(unknown_card_count=2, unknown_card_window_s=600))
    assert rules.on_unknown_card("L1", AT, 0, "hash-a", "110101********1234") == []
    assert rules.on_unknown_card("L1", AT, 5, "hash-b", "110101********9999") == []
    (alert,) = rules.on_unknown_card("L2", AT, 10, "hash-a", "110101********1234")
    assert alert[0] == "alert.unknown_card"
    assert alert[1]["id_number_masked"] == "110101********1234"

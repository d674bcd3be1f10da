"""Lock events as records: door states, lock status, key mismatches, with their alerts."""

from __future__ import annotations

from agent.door.alerts import AlertRules
from agent.door.doors import Record
from drivers.osdp.events import DoorStateChanged, KeyMismatch, LockEvent, LockStatusChanged

# Door states the platform hears about (the driver has others, e.g. unknown).
REPORTED_DOOR_STATES = frozenset({"closed", "open", "forced", "held_open"})


def lock_event_records(rules: AlertRules, lock: str, at: str, event: LockEvent) -> list[Record]:
    """The records (alerts first) that ``event`` at ``lock`` gives; none for other events."""
    records: list[Record] = []
    if isinstance(event, DoorStateChanged):
        state = event.state.value
        if state in REPORTED_DOOR_STATES:
            records += rules.on_door_state(lock, at, state)
            records.append(("door.state", {"lock": lock, "state": state, "at": at}))
    elif isinstance(event, LockStatusChanged):
        records += rules.on_lock_status(
            lock,
            at,
            event.online,
            event.tamper,
            was_online=event.was_online is not False,
            was_tamper=event.was_tamper,
        )
        records.append(
            (
                "lock.status",
                {"lock": lock, "online": event.online, "tamper": event.tamper, "at": at},
            )
        )
    elif isinstance(event, KeyMismatch):
        records.append(("lock.key_mismatch", {"lock": lock, "at": at}))
    return records

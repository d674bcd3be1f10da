"""``lockgw demo``: a scripted day in a simulated building, shown live, checked step by step.

Every step drives the simulated devices (cards, faces, doors, the network) and
the simulated platform, then checks what the lock did and what the platform
received, opened and verified. Personal data is shown masked. The demo exits
0 only if every step came out as expected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console

from drivers.idcard.identity import mask_id_number, mask_name
from firmware_sim.building import card_with_photo, guest_entry
from firmware_sim.idcards import VirtualCard, make_id_number
from firmware_sim.identity_service import SimIdentity
from firmware_sim.photos import (
    FACES,
    GUEST_A,
    GUEST_B,
    GUEST_C,
    GUEST_D,
    PRINTED_A,
    STRANGER,
    have_faces,
)
from firmware_sim.site import SimulatedSite

GRANT = "G-20261122-101"
EID_GRANT = "G-20261122-102"
DOOR, GATE, SIDE = "L101", "L102", "L103"  # SIDE: a Bluetooth LE lock (simulated Nuki)
# The gateway's default [policy] card_reuse_window_s.
CARD_REUSE_WINDOW_S = 10.0


class StepFailed(Exception):
    """A step did not come out as expected."""


@dataclass
class Day:
    """What the steps share: the site, the guests' cards and the console."""

    site: SimulatedSite
    console: Console
    cards: dict[str, VirtualCard] = field(default_factory=dict)

    @property
    def platform(self) -> Any:
        return self.site.building.platform

    def say(self, text: str) -> None:
        self.console.print(f"    {text}")

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            raise StepFailed(what)
        self.console.print(f"    [green]✓[/green] {what}")

    def received(
        self, msg_type: str, after: int, timeout: float = 20.0, **match: Any
    ) -> dict[str, Any]:
        def fits(body: dict[str, Any]) -> bool:
            return all(body.get(k) == v for k, v in match.items())

        try:
            env = self.platform.wait_for_event(msg_type, fits, timeout, after_seq=after)
        except TimeoutError:
            raise StepFailed(f"the platform received no {msg_type} {match or ''}") from None
        self.console.print(
            f"    [cyan]platform received[/cyan] {msg_type} #{env['seq']}: {_shown(env['body'])}"
        )
        return dict(env)

    def present(self, door: str, card: str, face: Path | None) -> None:
        self.site.present(door, self.cards[card], face)
        self.say(f"{card} presents the card at {door}" + (f", face: {face.name}" if face else ""))

    def relay(self, door: str, unlocked: bool, within: float) -> None:
        started = time.monotonic()
        changed = self.site.building.wait_relay(door, unlocked, timeout=within)
        if unlocked:
            self.expect(changed, f"{door} relay unlocked after {time.monotonic() - started:.2f} s")
        else:
            self.expect(not self.site.building.relay_unlocked(door), f"{door} stays locked")


def _shown(body: dict[str, Any]) -> str:
    """A body for the screen: personal data masked, photos summarised."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key == "id_number":
            out[key] = mask_id_number(str(value))
        elif key == "name":
            out[key] = mask_name(str(value))
        elif key == "address":
            out[key] = str(value)[:6] + "…"
        elif key == "code":
            out[key] = f"<{len(str(value))} chars>"
        elif key.endswith("_b64"):
            out[key] = f"<{len(str(value)) * 3 // 4} bytes>"
        elif key in ("at", "birth", "issuer", "valid_from", "valid_until"):
            continue
        else:
            out[key] = value
    return ", ".join(f"{k}={v}" for k, v in out.items())


def _cards() -> dict[str, VirtualCard]:
    def card(name: str, photo: Path, birth: date, seq: int, sex: int) -> VirtualCard:
        return card_with_photo(
            photo,
            name=name,
            sex=str(sex),
            birth=f"{birth:%Y%m%d}",
            id_number=make_id_number(birth, "110105", seq, sex),
        )

    return {
        "guest A": card("王建国", GUEST_A[0], date(1961, 8, 4), 21, 1),
        "guest B": card("李秀英", GUEST_B[0], date(1962, 11, 20), 34, 2),
        "guest C": card("张伟", GUEST_C[0], date(1986, 12, 26), 55, 1),
        "guest D": card("刘芳", GUEST_D[0], date(1987, 2, 9), 66, 2),
    }


def _identity(card: VirtualCard) -> SimIdentity:
    """The guest as the identity service knows them (behind their 网证)."""
    return SimIdentity(card.name, card.sex, card.nation, card.birth, card.id_number)  # type: ignore[arg-type]


def step_grant(day: Day) -> None:
    cards = day.cards
    guests = [
        guest_entry(cards["guest A"], "guest-a", GUEST_A[0]),
        guest_entry(cards["guest B"], "guest-b", GUEST_B[0]),
    ]
    doors = [DOOR, GATE, SIDE]
    cmd = day.platform.put_grant(GRANT, doors, guests, room="101", hours=24, pin="135790")
    day.say(f"platform sends grant.put {GRANT}: room 101, doors {', '.join(doors)}, 2 guests")
    ack = day.platform.wait_ack(cmd)
    day.expect(ack["status"] == "ok", f"gateway acknowledged the grant ({ack['status']})")
    # Grants arrive ahead of guests: the gateway encodes the grant photos meanwhile.
    day.expect(day.site.wait_templates_ready(), "face templates made from the grant photos")


def step_checkin(day: Day) -> None:
    mark = day.platform.last_seq
    day.present(DOOR, "guest A", GUEST_A[1])
    day.relay(DOOR, True, within=10)
    day.received("checkin.verified", mark, guest_id="guest-a", lock=DOOR)
    day.received("door.opened", mark, lock=DOOR, grant_id=GRANT)


def step_second_guest(day: Day) -> None:
    day.site.building.wait_relay(DOOR, False, timeout=15)
    mark = day.platform.last_seq
    day.present(DOOR, "guest B", GUEST_B[1])
    day.relay(DOOR, True, within=10)
    day.received("checkin.verified", mark, guest_id="guest-b", lock=DOOR)
    day.received("door.opened", mark, lock=DOOR, grant_id=GRANT)


def step_ble_door(day: Day) -> None:
    mark = day.platform.last_seq
    day.say(f"{SIDE} has a Bluetooth LE lock (paired with `lockgw locks pair {SIDE}`)")
    # One person, one door: the same card at another door within [policy]
    # card_reuse_window_s (10 s) of an opening is refused card_in_use.
    day.say("guest B walks round to the side door")
    time.sleep(CARD_REUSE_WINDOW_S + 0.5)
    day.present(SIDE, "guest B", GUEST_B[1])
    day.relay(SIDE, True, within=15)
    day.received("door.opened", mark, lock=SIDE, grant_id=GRANT)
    radio = day.site.building.ble
    if radio is None:
        raise StepFailed(f"{SIDE} has no BLE lock in this building")
    radio.request(op="battery", lock=0, percent=9)
    day.say(f"{SIDE}'s batteries run low")
    day.received("alert.lock_battery_critical", mark, lock=SIDE)


def step_eid(day: Day) -> None:
    building = day.site.building
    cards = day.cards
    guests = [
        guest_entry(cards["guest C"], "guest-c", GUEST_C[0]),
        guest_entry(cards["guest D"], "guest-d", GUEST_D[0]),
    ]
    cmd = day.platform.put_grant(EID_GRANT, [DOOR, GATE], guests, room="102", hours=24)
    day.say(f"platform sends grant.put {EID_GRANT}: room 102, 2 guests")
    day.expect(day.platform.wait_ack(cmd)["status"] == "ok", "gateway acknowledged the grant")
    # Grants arrive ahead of guests: guest C comes once the grant's templates are made.
    day.expect(day.site.wait_templates_ready(), "face templates made from the grant photos")
    building.wait_relay(GATE, False, timeout=15)
    code = day.platform.sim.identity.issue(_identity(day.cards["guest C"]))
    day.say("guest C has no card with them; their phone shows a 网证 code (single use)")
    building.show_face(GATE, GUEST_C[1])
    time.sleep(0.3)
    mark = day.platform.last_seq
    building.scan_code(GATE, code)
    day.say(f"guest C holds the phone to {GATE}'s QR scanner")
    day.relay(GATE, True, within=10)
    day.received("eid.verify", mark, lock=GATE)
    day.received("checkin.verified", mark, guest_id="guest-c", card_type="eid")
    day.received("door.opened", mark, lock=GATE, grant_id=EID_GRANT)


def step_eid_expired(day: Day) -> None:
    building = day.site.building
    building.wait_relay(DOOR, False, timeout=15)
    code = day.platform.sim.identity.issue(_identity(day.cards["guest D"]), lifetime_s=-60)
    mark = day.platform.last_seq
    building.show_code(DOOR, code, GUEST_D[1])
    day.say(f"guest D holds up a 网证 code that expired a minute ago to {DOOR}'s camera")
    day.received("access.denied", mark, lock=DOOR, reason="eid_failed", error="code_expired")
    day.relay(DOOR, False, within=0)
    building.show_face(DOOR, None)


def step_stranger(day: Day) -> None:
    day.site.building.wait_relay(DOOR, False, timeout=15)
    mark = day.platform.last_seq
    day.present(DOOR, "guest A", STRANGER)
    day.say("(the person at the door is not guest A)")
    day.received("alert.identity_mismatch", mark, lock=DOOR)
    day.received("access.denied", mark, lock=DOOR, reason="face_mismatch")
    day.relay(DOOR, False, within=0)


def step_printed_photo(day: Day) -> None:
    day.site.building.wait_relay(DOOR, False, timeout=15)
    mark = day.platform.last_seq
    day.present(DOOR, "guest A", PRINTED_A)
    day.say("(a printed photo of guest A is held before the camera)")
    day.received("access.denied", mark, lock=DOOR, reason="liveness_failed")
    day.relay(DOOR, False, within=0)


def step_forced(day: Day) -> None:
    mark = day.platform.last_seq
    day.site.building.open_door(GATE)
    day.say(f"somebody pushes {GATE} open while it is locked")
    day.received("alert.door_forced", mark, lock=GATE)
    day.received("door.state", mark, lock=GATE, state="forced")
    day.site.building.close_door(GATE)


def step_offline(day: Day) -> None:
    building = day.site.building
    mark = day.platform.last_seq
    building.cut_network()
    day.say("the building's internet connection goes down")
    day.present(GATE, "guest A", GUEST_A[1])
    day.relay(GATE, True, within=10)
    time.sleep(1.0)
    arrived = [e for e in day.platform.received("door.opened") if e["seq"] > mark]
    day.expect(not arrived, "nothing reached the platform while offline")
    building.restore_network()
    day.say("the connection comes back")
    day.received("door.opened", mark, timeout=40, lock=GATE, grant_id=GRANT)


def step_revoke(day: Day) -> None:
    day.site.building.wait_relay(GATE, False, timeout=15)
    cmd = day.platform.revoke(GRANT, "checkout")
    day.say(f"platform sends grant.revoke {GRANT} (checkout)")
    ack = day.platform.wait_ack(cmd)
    day.expect(ack["status"] == "ok", "gateway acknowledged the revocation")
    mark = day.platform.last_seq
    day.present(DOOR, "guest A", GUEST_A[1])
    day.received("access.denied", mark, lock=DOOR, reason="no_grant")
    day.relay(DOOR, False, within=0)


def step_privacy(day: Day) -> None:
    secrets = [c.name for c in day.cards.values()] + [c.id_number for c in day.cards.values()]
    files = [day.site.log_path, *sorted(day.site.building.state_dir.glob("lockgw.db*"))]
    leaks = [
        f.name for f in files if f.is_file() and any(s.encode() in f.read_bytes() for s in secrets)
    ]
    day.expect(not leaks, f"no guest name or ID number in plaintext in {len(files)} gateway files")


DAY: list[tuple[str, Callable[[Day], None]]] = [
    ("A check-in grant arrives from the platform", step_grant),
    ("Guest A checks in: ID card + face (人证合一)", step_checkin),
    ("Guest B of the same booking checks in", step_second_guest),
    ("Guest C checks in with the electronic ID (网证) at the QR scanner", step_eid),
    ("Guest D's 网证 code has expired: refused", step_eid_expired),
    ("A stranger tries guest A's card", step_stranger),
    ("A printed photo of guest A is held up with the card", step_printed_photo),
    ("A door is forced", step_forced),
    ("Guest B uses the side door: a Bluetooth LE lock", step_ble_door),
    ("Network down: guest A enters; network back: the record arrives", step_offline),
    ("The grant is revoked: the card no longer opens", step_revoke),
    ("Privacy: what the gateway keeps on disk", step_privacy),
]


def run_demo(console: Console | None = None, workdir: Path | None = None) -> bool:
    """Play the day; True when every step came out as expected."""
    console = console or Console(highlight=False)
    if not have_faces():
        console.print(f"[red]demo needs the face photos at {FACES}[/red]")
        return False
    console.rule("lockgw demo: a simulated building, a real gateway")
    started = time.monotonic()
    console.print("starting the building (2 OSDP doors with secure channel, 1 Bluetooth LE")
    console.print("door, ID readers, QR scanners, cameras, Mosquitto, the platform simulator)")
    console.print("and the gateway daemon …")
    overrides = {"doors": {"unlock_seconds": 3}, "per_door": {DOOR: {"qr_camera": True}}}
    site = SimulatedSite([DOOR, GATE, SIDE], workdir, ble_doors=[SIDE], config_overrides=overrides)
    passed = 0
    try:
        site.start()
        console.print(f"gateway online after {time.monotonic() - started:.1f} s\n")
        day = Day(site, console, _cards())
        for number, (title, step) in enumerate(DAY, 1):
            console.print(f"[bold]{number}. {title}[/bold]")
            try:
                step(day)
            except StepFailed as exc:
                console.print(f"    [red]✗ {exc}[/red]")
                break
            passed += 1
    finally:
        site.stop()
    ok = passed == len(DAY)
    verdict = "[green]all steps as expected[/green]" if ok else "[red]demo FAILED[/red]"
    console.print(f"\n{verdict}: {passed}/{len(DAY)} in {time.monotonic() - started:.0f} s")
    return ok


def main(argv: list[str] | None = None) -> int:
    """``python -m firmware_sim.demo [--workdir DIR]`` (what ``lockgw demo`` runs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="lockgw demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        return 0 if run_demo(workdir=args.workdir) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""Soak: cards presented every few seconds across 16 locks while the face worker is kept
busy, on the simulated building with the real daemon.

Prints one JSON line last:
{"minutes", "presentations", "false_offline", "lost", "duplicates", "p99_card_to_unlock_ms"}

- presentations: card + face presentations that opened a door (the relay switched).
- false_offline: ``alert.lock_offline`` received by the platform (the simulated locks
  never lose power, so every one is false).
- lost: openings (relay switched) with no ``door.opened`` at the platform after the drain.
- duplicates: ``door.opened`` records beyond one per opening, after the platform's
  (gw, seq) deduplication.
- p99_card_to_unlock_ms: from the card touching the reader to the relay switching.

The face worker is saturated by a second thread that keeps putting grants with photos
(each one a template to compute). The acceptance soak is 30 minutes (``--minutes 30``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from typing import Any

import repo_path  # noqa: F401  (first: puts the checkout on sys.path)

from firmware_sim.guests import make_guest
from firmware_sim.photos import GUEST_A
from firmware_sim.site import SimulatedSite


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else 0.0


def soak(minutes: float, doors: int = 16) -> dict[str, Any]:
    """Run the soak; the figures."""
    names = [f"L{101 + i}" for i in range(doors)]
    overrides = {"doors": {"unlock_seconds": 1}}
    samples: list[float] = []
    opened_at: list[str] = []
    with SimulatedSite(names, config_overrides=overrides) as site:
        building, platform = site.building, site.building.platform
        guests = {}
        for door in names:
            guest = make_guest(GUEST_A)
            platform.wait_ack(platform.put_grant(f"G-{door}", [door], [guest.entry()]))
            guests[door] = guest
        stop = threading.Event()

        def saturate_face() -> None:
            n = 0
            while not stop.is_set():
                extra = make_guest(GUEST_A)
                with contextlib.suppress(Exception):
                    platform.wait_ack(platform.put_grant(f"X-{n}", [names[0]], [extra.entry()]))
                n += 1
                time.sleep(0.5)

        loader = threading.Thread(target=saturate_face, daemon=True)
        loader.start()
        end = time.monotonic() + minutes * 60
        i = 0
        try:
            while time.monotonic() < end:
                door = names[i % len(names)]
                guest = guests[door]
                building.remove_card(door)
                building.show_face(door, guest.live_photo)
                building.wait_relay(door, False, timeout=30)
                time.sleep(0.6)
                t0 = time.monotonic()
                building.present_card(door, guest.card)
                if building.wait_relay(door, True, timeout=10):
                    samples.append((time.monotonic() - t0) * 1000)
                    opened_at.append(door)
                i += 1
        finally:
            stop.set()
            loader.join(30)
        # Let the outbox drain: every record acknowledged by the platform.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if site.gateway_status().get("outbox", {}).get("depth", 1) == 0:
                break
            time.sleep(0.5)
        received = platform.received("door.opened")
        by_lock: dict[str, int] = {}
        for env in received:
            by_lock[env["body"]["lock"]] = by_lock.get(env["body"]["lock"], 0) + 1
        expected: dict[str, int] = {}
        for door in opened_at:
            expected[door] = expected.get(door, 0) + 1
        lost = sum(max(0, n - by_lock.get(d, 0)) for d, n in expected.items())
        # Two records of one opening (same lock, same moment), after the (gw, seq) dedup.
        keys = [(env["body"]["lock"], env["body"]["at"]) for env in received]
        duplicates = len(keys) - len(set(keys))
        false_offline = len(platform.received("alert.lock_offline"))
    return {
        "minutes": round(minutes, 2),
        "presentations": len(samples),
        "false_offline": false_offline,
        "lost": lost,
        "duplicates": duplicates,
        "p99_card_to_unlock_ms": _pct(samples, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--doors", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(soak(args.minutes, args.doors)), flush=True)


if __name__ == "__main__":
    main()

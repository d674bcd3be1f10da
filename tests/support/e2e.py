"""Shared pieces of the end-to-end tests: presenting guests at the simulated site."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.guests import Guest, make_guest
from firmware_sim.idcards import VirtualCard
from firmware_sim.photos import (
    BIDEN,
    EXAMPLES,
    GUEST_A,
    GUEST_B,
    KNN,
    NUAA,
    OBAMA,
    PRINTED_A,
    STRANGER,
    TWO_PEOPLE,
)
from firmware_sim.site import SimulatedSite

__all__ = [
    "BIDEN",
    "EXAMPLES",
    "GUEST_A",
    "GUEST_B",
    "KNN",
    "NUAA",
    "OBAMA",
    "PRINTED_A",
    "STRANGER",
    "TWO_PEOPLE",
    "Guest",
    "make_guest",
    "needs_face_photos",
    "present",
    "stays_locked",
]

# The end-to-end tests use the public face photos (press and NUAA live frames).
needs_face_photos = pytest.mark.skipif(
    not (EXAMPLES.is_dir() and NUAA.is_dir()),
    reason=f"face photos not found at {EXAMPLES.parent.parent} (../shared/faces)",
)


def present(site: SimulatedSite, door: str, card: VirtualCard, face: Path | None) -> int:
    """Show ``face`` and present ``card``; the platform's seq mark before."""
    return site.present(door, card, face)


def stays_locked(site: SimulatedSite, door: str, seconds: float = 2.0) -> bool:
    """The relay did not unlock within ``seconds``."""
    return not site.building.wait_relay(door, True, timeout=seconds)

"""Shared pieces of the end-to-end tests: guests with cards and photos, presenting them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from agent.simsite import SimulatedSite
from firmware_sim.building import card_with_photo, guest_entry
from firmware_sim.idcards import VirtualCard, make_id_number

EXAMPLES = (
    Path(__file__).resolve().parents[2] / "shared" / "faces" / "face_recognition" / "examples"
)
KNN = EXAMPLES / "knn_examples" / "train"

# (grant photo, live photo at the door) of the same person.
OBAMA = (EXAMPLES / "obama.jpg", EXAMPLES / "obama2.jpg")
BIDEN = (EXAMPLES / "biden.jpg", KNN / "biden" / "biden2.jpg")
STRANGER = EXAMPLES / "lin-manuel-miranda.png"
TWO_PEOPLE = EXAMPLES / "two_people.jpg"

_serial = itertools.count(1)


@dataclass
class Guest:
    """A person with a card (and, in the grant, a photo)."""

    card: VirtualCard
    grant_photo: Path | None
    live_photo: Path | None
    guest_id: str

    def entry(self) -> dict[str, Any]:
        """The grant.put guest object."""
        return guest_entry(self.card, self.guest_id, self.grant_photo)


def make_guest(photos: tuple[Path, Path] | None, name: str = "测试人") -> Guest:
    """A guest with a unique, valid ID number."""
    n = next(_serial)
    birth = date(1970 + n % 30, 1 + n % 12, 1 + n % 27)
    sex = 1 + n % 2
    fields: dict[str, Any] = {
        "name": f"{name}{n}",
        "sex": str(sex),
        "birth": f"{birth:%Y%m%d}",
        "id_number": make_id_number(birth, "310104", n % 100, sex),
    }
    if photos is not None:
        card = card_with_photo(photos[0], **fields)
    else:
        from firmware_sim.idcards import sample_card

        card = sample_card(**fields)
    return Guest(
        card=card,
        grant_photo=photos[0] if photos else None,
        live_photo=photos[1] if photos else None,
        guest_id=f"guest-{n}",
    )


def present(site: SimulatedSite, door: str, card: VirtualCard, face: Path | None) -> int:
    """Show ``face`` and present ``card``; the platform's seq mark before."""
    return site.present(door, card, face)


def stays_locked(site: SimulatedSite, door: str, seconds: float = 2.0) -> bool:
    """The relay did not unlock within ``seconds``."""
    return not site.building.wait_relay(door, True, timeout=seconds)

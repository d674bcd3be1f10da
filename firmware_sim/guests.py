"""Guests of the simulated building: a virtual card with a unique valid number and photos."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from firmware_sim.building import card_with_photo, guest_entry
from firmware_sim.idcards import VirtualCard, make_id_number, sample_card

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
    card = card_with_photo(photos[0], **fields) if photos is not None else sample_card(**fields)
    return Guest(
        card=card,
        grant_photo=photos[0] if photos else None,
        live_photo=photos[1] if photos else None,
        guest_id=f"guest-{n}",
    )

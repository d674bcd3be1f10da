"""Where the simulators find the public face photos: ``../shared/faces`` beside a checkout.

The photos are test material, never part of the product or the repository. Set
``LOCKGW_FACES`` to use another copy.
"""

from __future__ import annotations

import os
from pathlib import Path

FACES = Path(
    os.environ.get("LOCKGW_FACES") or Path(__file__).resolve().parents[2] / "shared" / "faces"
)
EXAMPLES = FACES / "face_recognition" / "examples"
KNN = EXAMPLES / "knn_examples" / "train"

# (grant photo, live photo at the door) of the same person.
OBAMA = (EXAMPLES / "obama.jpg", EXAMPLES / "obama2.jpg")
BIDEN = (EXAMPLES / "biden.jpg", KNN / "biden" / "biden2.jpg")
STRANGER = EXAMPLES / "lin-manuel-miranda.png"
TWO_PEOPLE = EXAMPLES / "two_people.jpg"


def have_faces() -> bool:
    """True when the shared face photos are present."""
    return EXAMPLES.is_dir()

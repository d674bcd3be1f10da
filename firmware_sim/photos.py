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

NUAA = FACES / "nuaa"

# (grant photo, live photo at the door) of the same person. The door photos are webcam
# frames of a live person (NUAA), which presentation-attack detection accepts as live;
# a press photo such as obama2.jpg is itself a picture, and PAD says so.
GUEST_A = (
    NUAA / "live" / "0001" / "0001_00_00_01_0.jpg",
    NUAA / "live" / "0001" / "0001_00_00_01_499.jpg",
)
GUEST_B = (
    NUAA / "live" / "0003" / "0003_01_00_01_0.jpg",
    NUAA / "live" / "0003" / "0003_01_00_01_328.jpg",
)
GUEST_C = (
    NUAA / "live" / "0004" / "0004_01_00_01_0.jpg",
    NUAA / "live" / "0004" / "0004_01_00_01_339.jpg",
)
GUEST_D = (
    NUAA / "live" / "0005" / "0005_00_00_01_0.jpg",
    NUAA / "live" / "0005" / "0005_00_00_01_188.jpg",
)
# A printed photo of guest A held before the same webcam: matches A's face, is no person.
PRINTED_A = NUAA / "attack" / "0001" / "0001_00_00_01_166.jpg"
# Western photos (face_recognition's examples), used where liveness is not the subject.
OBAMA = (EXAMPLES / "obama.jpg", EXAMPLES / "obama2.jpg")
BIDEN = (EXAMPLES / "biden.jpg", KNN / "biden" / "biden2.jpg")
STRANGER = EXAMPLES / "lin-manuel-miranda.png"
TWO_PEOPLE = EXAMPLES / "two_people.jpg"


def have_faces() -> bool:
    """True when the shared face photos are present."""
    return EXAMPLES.is_dir() and NUAA.is_dir()

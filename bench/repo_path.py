"""Puts the checkout's root on ``sys.path``: the benchmarks drive the simulators in
``firmware_sim``, which are not part of the installed product. Import it first."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

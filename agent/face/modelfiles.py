"""The vendored ONNX model files: where they are and whether they are the ones we shipped.

The four files live in ``models/`` at the repository root (and inside the wheel
as ``agent/face/models`` when the package is built with them); ``[face]
models_dir`` points elsewhere. Each is checked against the SHA-256 listed in
the folder's ``SHA256SUMS`` *and* against the digest pinned here, so a file
swapped together with its checksum line is refused too. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

YUNET = "face_detection_yunet_2023mar.onnx"
MOBILEFACENET = "MobileFaceNet.onnx"
MINIFASNET_V2 = "2.7_80x80_MiniFASNetV2.onnx"
MINIFASNET_V1SE = "4_0_0_80x80_MiniFASNetV1SE.onnx"

PINNED_SHA256: dict[str, str] = {
    YUNET: "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    MOBILEFACENET: "b7120c095d60094f28a4a54ba6a8bf51b297a6273fb40ef6350dfec1f63d9507",
    MINIFASNET_V2: "4433e871ef03f6c4c13de1757e63dcd69db14b6d7d9cff2319cb274c0f6dbecb",
    MINIFASNET_V1SE: "a8e67ffbaf39fa74c3b2ed673b530fcfb2f47379d0f26a52b71c2fc6473ec20f",
}
RECOGNITION_FILES = (YUNET, MOBILEFACENET)
PAD_FILES = (MINIFASNET_V2, MINIFASNET_V1SE)


class ModelFileError(Exception):
    """A model file is missing or is not the file lockgw ships (named in the message)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"face model {path}: {problem}")


def default_models_dir() -> Path:
    """``agent/face/models`` inside an installed wheel, else ``models/`` of the checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "models", here.parents[1] / "models"):
        if (candidate / YUNET).is_file():
            return candidate
    return here.parents[1] / "models"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_sums(folder: Path) -> dict[str, str]:
    """file name -> hex digest from ``folder/SHA256SUMS`` (``sha256sum`` format)."""
    path = folder / "SHA256SUMS"
    sums: dict[str, str] = {}
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(path, f"cannot read the checksum list ({exc})") from exc
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ModelFileError(path, f"line {n} is not '<sha256>  <file>'")
        sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


@dataclass(frozen=True)
class VerifiedModels:
    """Paths of model files whose digests were checked just now."""

    folder: Path
    paths: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


def verify_models(folder: Path, names: tuple[str, ...]) -> VerifiedModels:
    """Check each file against SHA256SUMS and the pinned digest; raise on the first bad one."""
    sums = read_sums(folder)
    paths: dict[str, Path] = {}
    for name in names:
        path = folder / name
        if not path.is_file():
            raise ModelFileError(path, "missing")
        digest = sha256_file(path)
        listed = sums.get(name)
        if listed is None:
            raise ModelFileError(path, "not listed in SHA256SUMS")
        if digest != listed:
            raise ModelFileError(path, f"SHA-256 {digest[:16]}… differs from SHA256SUMS")
        if digest != PINNED_SHA256[name]:
            raise ModelFileError(path, f"SHA-256 {digest[:16]}… is not the shipped file")
        paths[name] = path
    return VerifiedModels(folder, paths)

"""Card photo decoding: JPEG/PNG, the WLT decoder plug-ins, sealing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.devices.wlt import (
    CommandDecoder,
    LibraryDecoder,
    PhotoDecodeError,
    decode_card_photo,
    decoder_from_settings,
    make_decoder,
)
from tests.support.idcard import FACES

WLT = b"WLf\x00" + bytes(range(256)) * 3 + bytes(252)


@pytest.fixture(scope="module")
def face_png() -> bytes:
    path = FACES / "face_recognition" / "examples" / "obama.jpg"
    if not path.exists():
        pytest.skip(f"face photos not found at {FACES} (../shared/faces)")
    image = cv2.imread(str(path))
    assert image is not None
    small = cv2.resize(image, (102, 126))
    ok, png = cv2.imencode(".png", small)
    assert ok
    return bytes(png)


def test_jpeg_and_png_photos_decode(face_png: bytes) -> None:
    image = decode_card_photo(face_png, "png", None)
    assert image is not None and image.shape == (126, 102, 3)
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    decoded = decode_card_photo(bytes(jpeg), "jpeg", None)
    assert decoded is not None and decoded.shape == (126, 102, 3)


def test_broken_jpeg_is_a_clear_error() -> None:
    with pytest.raises(PhotoDecodeError, match="not a decodable image"):
        decode_card_photo(b"\xff\xd8\xff" + bytes(100), "jpeg", None)
    with pytest.raises(PhotoDecodeError, match="unknown card photo format"):
        decode_card_photo(b"x", "gif", None)


def test_wlt_without_decoder_gives_no_image() -> None:
    assert decode_card_photo(WLT, "wlt", None) is None
    assert make_decoder(None) is None and make_decoder({"kind": "none"}) is None
    assert decoder_from_settings("none") is None


def _script(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "fake_wlt.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


# A stand-in for a vendor decoder: a 102x126 image whose colour is the WLT's byte 4.
_FAKE = """
    import sys, cv2, numpy as np
    args = sys.argv[1:]
    data = open(args[0], "rb").read() if args else sys.stdin.buffer.read()
    if not data.startswith(b"WL"):
        sys.exit(3)
    img = np.full((126, 102, 3), data[4], dtype=np.uint8)
    ok, out = cv2.imencode(".bmp", img)
    if len(args) > 1:
        open(args[1], "wb").write(out.tobytes())
    else:
        sys.stdout.buffer.write(out.tobytes())
"""


def test_command_decoder_stdin_stdout(tmp_path: Path) -> None:
    decoder = CommandDecoder(_script(tmp_path, _FAKE))
    image = decode_card_photo(WLT, "wlt", decoder)
    assert image is not None and image.shape == (126, 102, 3)
    assert int(image[60, 50, 0]) == WLT[4]


def test_command_decoder_with_files(tmp_path: Path) -> None:
    argv = [*_script(tmp_path, _FAKE), "{input}", "{output}"]
    decoder = make_decoder({"kind": "command", "argv": argv})
    assert decoder is not None
    image = decoder.decode_wlt(WLT)
    assert int(image[0, 0, 2]) == WLT[4]
    # The temporary files holding the photo are gone.
    assert not list(Path(tempfile.gettempdir()).glob("lockgw-wlt-*/photo.wlt"))


def test_command_decoder_failures_are_clear(tmp_path: Path) -> None:
    decoder = CommandDecoder(_script(tmp_path, _FAKE))
    with pytest.raises(PhotoDecodeError, match="exit 3") as err:
        decoder.decode_wlt(b"XX" + bytes(1022))
    assert "XX" not in str(err.value)
    with pytest.raises(PhotoDecodeError, match="cannot run"):
        CommandDecoder(["/nonexistent/wlt2bmp"]).decode_wlt(WLT)
    slow = CommandDecoder([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    with pytest.raises(PhotoDecodeError, match="timed out"):
        slow.decode_wlt(WLT)
    garbage = CommandDecoder([sys.executable, "-c", "print('hello')"])
    with pytest.raises(PhotoDecodeError, match="not a decodable image"):
        garbage.decode_wlt(WLT)


_C_DECODER = r"""
#include <string.h>
/* Stand-in vendor decoder: raw 102x126 BGR, every byte = wlt[4]; 1 = success. */
int unpack(const char *wlt, char *out, int flag) {
    if (wlt[0] != 'W' || wlt[1] != 'L') return -2;
    memset(out, (unsigned char)wlt[4], 102 * 126 * 3);
    return 1;
}
"""


@pytest.fixture(scope="module")
def fake_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build a stand-in WLT library")
    tmp = tmp_path_factory.mktemp("wltlib")
    src, lib = tmp / "fake.c", tmp / "libfakewlt.so"
    src.write_text(_C_DECODER)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


def test_library_decoder(fake_library: Path) -> None:
    decoder = decoder_from_settings("library", library=fake_library)
    assert isinstance(decoder, LibraryDecoder)
    image = decode_card_photo(WLT, "wlt", decoder)
    assert image is not None and image.shape == (126, 102, 3)
    assert np.all(image == WLT[4])
    with pytest.raises(PhotoDecodeError, match="returned -2"):
        decoder.decode_wlt(b"XX" + bytes(1022))


def test_library_decoder_load_errors(fake_library: Path) -> None:
    with pytest.raises(PhotoDecodeError, match="cannot load"):
        LibraryDecoder("/nonexistent/libwlt.so")
    with pytest.raises(PhotoDecodeError, match="no function"):
        LibraryDecoder(str(fake_library), function="nope")


def test_bad_decoder_settings() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        make_decoder({"kind": "magic"})
    with pytest.raises(ValueError, match="empty"):
        decoder_from_settings("command", command="")
    with pytest.raises(ValueError, match="path"):
        make_decoder({"kind": "library"})

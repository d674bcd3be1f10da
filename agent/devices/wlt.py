"""Card photo decoding: the WLT plug-in interface and JPEG/PNG from the simulator.

Real modules send the photo as 1024 bytes of WLT, which only the module
vendors' native code decodes (to a 102x126 BGR image). A site names its decoder
in the configuration:

- ``{"kind": "command", "argv": "/opt/vendor/wlt2bmp"}``: the command reads WLT
  on stdin and writes a BMP/PNG/JPEG on stdout; or, with placeholders,
  ``["/opt/vendor/wlt2bmp", "{input}", "{output}"]`` it reads the file
  ``{input}`` and writes ``{output}`` (in a private temporary directory, deleted
  after);
- ``{"kind": "library", "path": "/opt/vendor/libwlt2bmp.so", "function": "unpack"}``:
  ``int unpack(const char *wlt, char *out, int flag)`` returning 1 on success
  and writing either a whole BMP file (starting ``BM``) or raw 102x126 BGR
  pixels, top row first, into a 38862-byte buffer;
- ``{"kind": "none"}`` or no entry: no decoding. The card photo is then only
  sealed for the record and face matching uses the grant's photo.

Decoded images are numpy BGR arrays (OpenCV convention), in memory only.
"""

from __future__ import annotations

import ctypes
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

WLT_WIDTH = 102
WLT_HEIGHT = 126
# Vendor output buffers: 54-byte BMP header + 126 rows of 102*3 bytes padded to 308.
LIB_BUFFER_BYTES = 38862

Image = npt.NDArray[np.uint8]


class PhotoDecodeError(Exception):
    """A card photo could not be decoded (the message holds no photo data)."""


class WltDecoder(Protocol):
    """Turns WLT bytes into a BGR image."""

    def decode_wlt(self, wlt: bytes) -> Image: ...


def _imdecode(data: bytes, what: str) -> Image:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise PhotoDecodeError(f"{what} is not a decodable image ({len(data)} bytes)")
    return np.asarray(image, dtype=np.uint8)


class CommandDecoder:
    """Runs a site's decoder command.

    With ``{input}`` / ``{output}`` placeholders in ``argv`` the WLT and the image
    go through files in a private temporary directory; without them, the WLT is
    written to the command's stdin and the image read from its stdout.
    """

    def __init__(self, argv: Sequence[str] | str, timeout: float = 10.0) -> None:
        args = shlex.split(argv) if isinstance(argv, str) else list(argv)
        if not args:
            raise ValueError("WLT decoder command is empty")
        self.argv = args
        self.timeout = timeout

    def decode_wlt(self, wlt: bytes) -> Image:
        """Decode via the command; errors name the command's exit status, not the data."""
        with tempfile.TemporaryDirectory(prefix="lockgw-wlt-") as tmp:
            src, dst = Path(tmp) / "photo.wlt", Path(tmp) / "photo.bmp"
            uses_input = any("{input}" in a for a in self.argv)
            uses_output = any("{output}" in a for a in self.argv)
            if uses_input:
                src.write_bytes(wlt)
            argv = [a.replace("{input}", str(src)).replace("{output}", str(dst)) for a in self.argv]
            try:
                done = subprocess.run(
                    argv,
                    input=None if uses_input else wlt,
                    stdin=subprocess.DEVNULL if uses_input else None,
                    capture_output=True,
                    timeout=self.timeout,
                    check=False,
                )
            except (FileNotFoundError, PermissionError):
                raise PhotoDecodeError(f"WLT decoder command cannot run: {self.argv[0]}") from None
            except subprocess.TimeoutExpired:
                raise PhotoDecodeError(
                    f"WLT decoder command timed out after {self.timeout:g} s"
                ) from None
            if done.returncode != 0:
                raise PhotoDecodeError(f"WLT decoder command failed with exit {done.returncode}")
            if not uses_output:
                return _imdecode(done.stdout, "WLT decoder output")
            if not dst.exists():
                raise PhotoDecodeError("WLT decoder command wrote no output file")
            return _imdecode(dst.read_bytes(), "WLT decoder output")


class LibraryDecoder:
    """Calls a vendor shared library's ``int f(const char*, char*, int)`` decoder."""

    def __init__(self, path: str, function: str = "unpack", flag: int = 0) -> None:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            raise PhotoDecodeError(f"cannot load WLT decoder library {path}") from None
        try:
            func = getattr(lib, function)
        except AttributeError:
            raise PhotoDecodeError(f"WLT decoder library has no function {function}") from None
        func.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        func.restype = ctypes.c_int
        self._func = func
        self._flag = flag
        # Vendor decoders are rarely thread-safe.
        self._lock = threading.Lock()

    def decode_wlt(self, wlt: bytes) -> Image:
        """Decode via the library; a non-1 return is a :class:`PhotoDecodeError`."""
        out = ctypes.create_string_buffer(LIB_BUFFER_BYTES)
        with self._lock:
            result = self._func(wlt, out, self._flag)
        if result != 1:
            raise PhotoDecodeError(f"WLT decoder library returned {result}")
        raw = out.raw
        if raw[:2] == b"BM":
            return _imdecode(raw, "WLT decoder output")
        pixels = WLT_WIDTH * WLT_HEIGHT * 3
        return np.frombuffer(raw[:pixels], dtype=np.uint8).reshape(WLT_HEIGHT, WLT_WIDTH, 3).copy()


def make_decoder(spec: Mapping[str, object] | None) -> WltDecoder | None:
    """Build the decoder a site configured (see the module doc); None when there is none."""
    if not spec:
        return None
    kind = spec.get("kind", "none")
    if kind == "none":
        return None
    if kind == "command":
        argv = spec.get("argv")
        if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
            command: list[str] | str = [str(a) for a in argv]
        elif isinstance(argv, str):
            command = argv
        else:
            raise ValueError("wlt decoder: 'argv' must be a command line or a list of strings")
        timeout = spec.get("timeout", 10.0)
        if not isinstance(timeout, int | float):
            raise ValueError("wlt decoder: 'timeout' must be a number")
        return CommandDecoder(command, float(timeout))
    if kind == "library":
        path, function = spec.get("path"), spec.get("function", "unpack")
        if not isinstance(path, str) or not isinstance(function, str):
            raise ValueError("wlt decoder: 'path' and 'function' must be strings")
        flag = spec.get("flag", 0)
        if not isinstance(flag, int):
            raise ValueError("wlt decoder: 'flag' must be an integer")
        return LibraryDecoder(path, function, flag)
    raise ValueError(f"wlt decoder: unknown kind {kind!r} (none, command, library)")


def decoder_from_settings(
    kind: str, command: str | None = None, library: str | Path | None = None
) -> WltDecoder | None:
    """The decoder for the ``[readers]`` settings wlt_decoder, wlt_command, wlt_library."""
    if kind == "command":
        return make_decoder({"kind": "command", "argv": command or ""})
    if kind == "library":
        return make_decoder({"kind": "library", "path": str(library) if library else None})
    return make_decoder({"kind": kind})


def decode_card_photo(photo: bytes, fmt: str, decoder: WltDecoder | None) -> Image | None:
    """The card photo as a BGR image, or None when it is WLT and no decoder is set."""
    if fmt in ("jpeg", "png"):
        return _imdecode(photo, f"card photo ({fmt})")
    if fmt != "wlt":
        raise PhotoDecodeError(f"unknown card photo format {fmt!r}")
    if decoder is None:
        return None
    return decoder.decode_wlt(photo)

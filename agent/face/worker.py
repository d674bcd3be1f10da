"""Face inference in a separate worker process, with a hard timeout per request.

Native inference (OpenCV's dnn, dlib) releases neither control nor memory on
demand: a frame that makes it stall would stall whatever thread called it. So
the models live in a child process; callers (any daemon thread) send a request
over a pipe and wait at most their timeout. A request that does not answer in time is a failed
attempt (reason ``timeout``): the child is killed and a fresh one started, and
the caller returns at once, never blocking the daemon's loop.

Requests are served one at a time; a caller that cannot get the worker within
its timeout gets reason ``busy``. While a fresh child loads its models,
callers get ``worker_starting`` rather than killing it again.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from agent.face.detect import Reason
from agent.face.liveness import BlinkDetector, LivenessResult, fuse_pad
from agent.face.loader import load_face_model
from agent.face.modelfiles import PAD_FILES, RECOGNITION_FILES, verify_models
from agent.face.settings import FaceSettings
from agent.face.verify import VerifyResult

log = logging.getLogger(__name__)

_OK = "ok"
_ERROR = "error"
_PR_SET_PDEATHSIG = 1
# A fresh interpreter rather than multiprocessing's spawn, which would re-import
# the caller's main module (the daemon's, or a test runner's) in the child.
_CHILD_CODE = "import sys; from agent.face.worker import _child_main; _child_main(sys.argv[1:])"


class _Failed:
    """A request that produced no answer, with the reason to report."""

    def __init__(self, reason: Reason) -> None:
        self.reason = reason


def _trim() -> None:
    """Return the heap's free memory to the kernel (glibc ``malloc_trim``; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this child when the daemon dies, even mid-inference (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _serve(conn: Connection, settings: FaceSettings, test_hooks: bool) -> None:
    """Child process body: load models, then answer requests until the pipe closes."""
    try:
        engine = load_face_model(settings)
        landmarks68 = getattr(engine, "landmarks68", None)
        blink = BlinkDetector(landmarks68) if settings.uses_blink and landmarks68 else None
        pad = getattr(engine, "pad_burst", None)
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            seq, op, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            value: Any
            if op == "verify":
                value = engine.verify(*args)
            elif op == "encode_reference":
                value = engine.encode_reference(*args)
            elif op == "encodings":
                value = engine.all_encodings(*args)
            elif op == "pad_score" and pad is not None:
                value = pad(args)[0].live
            elif op == "live_face":
                value = engine.live_face(*args)
            elif op == "liveness":
                value = _liveness(settings, pad, blink, args[0])
            elif op == "stall" and test_hooks:
                time.sleep(args[0])
                value = None
            elif op == "ping":
                value = os.getpid()
            else:
                raise ValueError(f"unknown face worker request {op!r}")
            conn.send((seq, _OK, value))
            if op == "encode_reference":
                # Decoding a large photo leaves freed arenas glibc keeps; give them back.
                _trim()
        except Exception as exc:
            # Exception text from cv2/dlib names shapes and types, not people.
            conn.send((seq, _ERROR, type(exc).__name__))


def _liveness(
    settings: FaceSettings,
    pad: Callable[[Sequence[np.ndarray]], list[Any]] | None,
    blink: BlinkDetector | None,
    frames: Sequence[np.ndarray],
) -> LivenessResult:
    """The site's liveness over one burst: PAD, blink, or both (both must pass)."""
    result: LivenessResult | None = None
    if settings.uses_pad:
        if pad is None:
            raise ValueError("PAD networks not loaded")
        result = fuse_pad([p.live for p in pad(frames)], settings.pad_threshold, len(frames))
        if not result.passed:
            return result
    if settings.uses_blink:
        if blink is None:
            raise ValueError("blink landmarks not loaded")
        blinked = blink.check(frames)
        if result is None or not blinked.passed:
            return blinked
    assert result is not None
    return result


def _child_main(argv: Sequence[str]) -> None:
    """Entry point of the child: ``FD PARENT_PID`` (see _CHILD_CODE)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd, parent_pid = int(argv[0]), int(argv[1])
    _die_with_parent(parent_pid)
    conn = Connection(fd)
    try:
        settings, test_hooks = conn.recv()
    except (EOFError, OSError):
        return
    _serve(conn, settings, test_hooks)


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class FaceWorker:
    """Thread-safe client of one face inference process."""

    def __init__(
        self,
        settings: FaceSettings,
        *,
        timeout_s: float = 2.0,
        test_hooks: bool = False,
    ) -> None:
        # Fail at configuration time, not in the child, when a model file is missing
        # or changed (the child checks again when it loads them).
        for which in settings.dlib_files():
            path = settings.model_path(which)
            if not path.is_file():
                raise FileNotFoundError(f"face {which} model not found: {path}")
        if settings.model == "mobilefacenet":
            verify_models(settings.resolved_models_dir(), RECOGNITION_FILES + PAD_FILES)
        self.settings = settings
        self.timeout_s = timeout_s
        self._test_hooks = test_hooks
        # Children are started from this one long-lived thread: the kernel's
        # parent-death signal follows the thread that started a child, and a
        # restart may happen on any short-lived caller thread.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="face-spawn")
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._ready = False
        self._closed = False
        self._seq = 0
        self._stats_lock = threading.Lock()
        self._stats: dict[str, int] = dict.fromkeys(
            ("requests", "timeouts", "restarts", "errors", "busy", "starting"), 0
        )

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Spawn the worker process (returns at once; models load in the background)."""
        with self._lock:
            self._spawn()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the models are loaded (for startup and tests)."""
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            self._spawn()
            return self._await_ready(time.monotonic() + timeout)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop the worker process."""
        with self._lock:
            self._closed = True
            self._kill()
        self._spawner.shutdown(wait=False)

    def __enter__(self) -> FaceWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def model(self) -> str:
        """The face model whose templates this worker makes and compares."""
        return self.settings.model

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def rss_bytes(self) -> int | None:
        """Resident memory of the worker process, from /proc."""
        pid = self.pid
        return _rss_bytes(pid) if pid is not None else None

    def stats(self) -> dict[str, int]:
        """Counters: requests, timeouts, restarts, errors, busy, starting."""
        with self._stats_lock:
            return dict(self._stats)

    def _count(self, name: str) -> None:
        with self._stats_lock:
            self._stats[name] += 1

    def _spawn(self) -> None:
        if self._proc is not None or self._closed:
            return
        self._proc, self._conn = self._spawner.submit(self._start_child).result()
        self._ready = False

    def _start_child(self) -> tuple[subprocess.Popen[bytes], Connection]:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        # The child imports this package; make sure it finds the same copy.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with child_sock:
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE, str(child_sock.fileno()), str(os.getpid())],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        conn = Connection(parent_sock.detach())
        conn.send((self.settings, self._test_hooks))
        return proc, conn

    def _kill(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc, self._conn, self._ready = None, None, False
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def _restart(self, why: str) -> None:
        self._count("restarts")
        log.warning("face worker restarted", extra={"why": why})
        self._kill()
        self._spawn()

    def _await_ready(self, deadline: float) -> bool:
        conn = self._conn
        if self._ready:
            return True
        if conn is None:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not conn.poll(remaining):
            return False
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            self._restart("worker died while loading models")
            return False
        if msg[0] == "ready":
            self._ready = True
            return True
        log.error("face worker could not load its models", extra={"error": str(msg[1])})
        self._kill()
        return False

    # -- requests ----------------------------------------------------------

    def _call(self, op: str, args: tuple[Any, ...], timeout: float | None) -> Any:
        timeout = self.timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=max(timeout, 0.0)):
            self._count("busy")
            return _Failed(Reason.BUSY)
        try:
            self._count("requests")
            if self._closed:
                return _Failed(Reason.WORKER_ERROR)
            self._spawn()
            if not self._await_ready(deadline):
                self._count("starting")
                return _Failed(Reason.WORKER_STARTING)
            assert self._conn is not None
            self._seq += 1
            try:
                self._conn.send((self._seq, op, args))
            except (OSError, ValueError):
                self._count("errors")
                self._restart("request could not be sent")
                return _Failed(Reason.WORKER_ERROR)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._conn.poll(remaining):
                    self._count("timeouts")
                    self._restart(f"{op} timed out after {timeout:.2f}s")
                    return _Failed(Reason.TIMEOUT)
                try:
                    seq, status, value = self._conn.recv()
                except (EOFError, OSError):
                    self._count("errors")
                    self._restart("worker died")
                    return _Failed(Reason.WORKER_ERROR)
                if seq != self._seq:
                    continue
                if status != _OK:
                    self._count("errors")
                    log.error("face worker request failed", extra={"op": op, "error": value})
                    return _Failed(Reason.WORKER_ERROR)
                return value
        finally:
            self._lock.release()

    def verify(
        self, frame: np.ndarray, reference: bytes, timeout: float | None = None
    ) -> VerifyResult:
        """Compare a live BGR frame with a reference template; a failed result on timeout."""
        start = time.monotonic()
        out = self._call("verify", (frame, reference), timeout)
        if isinstance(out, _Failed):
            ms = (time.monotonic() - start) * 1000
            return VerifyResult.failed(out.reason, self.settings.threshold, ms)
        assert isinstance(out, VerifyResult)
        return out

    def encode_reference(self, image: bytes, timeout: float | None = None) -> bytes | Reason:
        """Template of the face in a JPEG/PNG photo (grant or card photo), or why not."""
        out = self._call("encode_reference", (image,), timeout)
        if isinstance(out, _Failed):
            return out.reason
        assert isinstance(out, bytes | Reason)
        return out

    def encodings(self, frame: np.ndarray, timeout: float | None = None) -> list[np.ndarray] | None:
        """Encodings of every face in the frame (occupant counting); None when failed."""
        out = self._call("encodings", (frame,), timeout)
        if isinstance(out, _Failed):
            return None
        assert isinstance(out, list)
        return out

    def live_face(self, frame: np.ndarray, timeout: float | None = None) -> bytes | Reason:
        """A JPEG crop of the main face in a live frame, or why there is none."""
        out = self._call("live_face", (frame,), timeout)
        if isinstance(out, _Failed):
            return out.reason
        assert isinstance(out, bytes | Reason)
        return out

    def liveness(
        self, frames: Sequence[np.ndarray], timeout: float | None = None
    ) -> LivenessResult:
        """Run the site's liveness policy on a burst of frames (fails closed on timeout)."""
        if self.settings.liveness == "off":
            return LivenessResult(True, "off", len(frames))
        out = self._call("liveness", (list(frames),), timeout)
        if isinstance(out, _Failed):
            return LivenessResult(False, out.reason.value, len(frames))
        assert isinstance(out, LivenessResult)
        return out

    def pad_score(self, frame: np.ndarray, timeout: float | None = None) -> float | None:
        """PAD live probability of the frame's largest face (None: no face or failed)."""
        out = self._call("pad_score", (frame,), timeout)
        if isinstance(out, _Failed):
            return None
        return None if out is None else float(out)

    def stall(self, seconds: float, timeout: float | None = None) -> bool:
        """Test hook: make the worker sleep; True if it answered in time."""
        return not isinstance(self._call("stall", (seconds,), timeout), _Failed)


def verify_burst(
    worker: FaceWorker,
    read_frame: Callable[[], np.ndarray | None],
    reference: bytes,
    *,
    attempts: int,
    deadline_s: float | None = None,
    pad: bool | None = None,
    pad_min_frames: int = 2,
) -> tuple[VerifyResult, LivenessResult | None]:
    """Verify the frames of one attempt (up to ``attempts``) and fuse PAD over them.

    The face result is the first match among the frames (a guest is refused
    only when no frame matches); with PAD, every frame with a face adds its
    live probability and the attempt is live when their mean reaches the
    site's ``pad_threshold``. The attempt stops early once a frame matched
    and, with PAD, at least ``pad_min_frames`` frames were scored and their
    mean is live: one lucky frame never decides liveness alone. A frame that
    is the reference replayed refuses the whole attempt. Liveness is None when
    PAD is not asked for (``pad``; None: the site's setting) or the attempt
    ended on a bad or replayed reference.
    """
    use_pad = worker.settings.uses_pad if pad is None else pad
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    threshold = worker.settings.threshold
    end = None if deadline_s is None else time.monotonic() + deadline_s
    best: VerifyResult | None = None
    match: VerifyResult | None = None
    last = VerifyResult.failed(Reason.NO_FRAME, threshold)
    scores: list[float | None] = []
    for _ in range(attempts):
        timeout = None
        if end is not None:
            timeout = min(worker.timeout_s, end - time.monotonic())
            if timeout <= 0:
                break
        frame = read_frame()
        if frame is None:
            last = VerifyResult.failed(Reason.NO_FRAME, threshold)
            continue
        last = worker.verify(frame, reference, timeout)
        scores.append(last.live_score)
        if last.reason in (Reason.BAD_TEMPLATE, Reason.TEMPLATE_MODEL, Reason.REPLAYED_REFERENCE):
            return last, None
        if last.accepted and match is None:
            match = last
        if last.reason is Reason.NO_MATCH and (
            best is None or (last.distance or 0.0) < (best.distance or 0.0)
        ):
            best = last
        if match is not None and (
            not use_pad
            or _live_so_far(scores, worker.settings.pad_threshold, min(pad_min_frames, attempts))
        ):
            break
    face = match or best or last
    if not use_pad:
        return face, None
    return face, fuse_pad(scores, worker.settings.pad_threshold)


def _live_so_far(scores: Sequence[float | None], threshold: float, min_frames: int) -> bool:
    seen = [s for s in scores if s is not None]
    return len(seen) >= min_frames and sum(seen) / len(seen) >= threshold


def verify_attempts(
    worker: FaceWorker,
    read_frame: Callable[[], np.ndarray | None],
    reference: bytes,
    *,
    attempts: int,
    deadline_s: float | None = None,
) -> VerifyResult:
    """Verify up to ``attempts`` camera frames; the first match wins.

    Without a match, the result is the closest ``no_match`` (evidence for
    ``alert.identity_mismatch``) or else the last attempt's reason. A bad
    template ends the attempts at once; ``deadline_s`` bounds the whole series.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    end = None if deadline_s is None else time.monotonic() + deadline_s
    best: VerifyResult | None = None
    last = VerifyResult.failed(Reason.NO_FRAME, worker.settings.threshold)
    for _ in range(attempts):
        timeout = None
        if end is not None:
            timeout = min(worker.timeout_s, end - time.monotonic())
            if timeout <= 0:
                break
        frame = read_frame()
        if frame is None:
            last = VerifyResult.failed(Reason.NO_FRAME, worker.settings.threshold)
            continue
        last = worker.verify(frame, reference, timeout)
        if last.accepted or last.reason in (
            Reason.BAD_TEMPLATE,
            Reason.TEMPLATE_MODEL,
            Reason.REPLAYED_REFERENCE,
        ):
            return last
        if last.reason is Reason.NO_MATCH and (
            best is None or (last.distance or 0.0) < (best.distance or 0.0)
        ):
            best = last
    return best or last

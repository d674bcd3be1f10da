"""Face inference in a separate worker process, with a hard timeout per request.

dlib releases neither control nor memory on demand: a frame that makes it
stall would stall whatever thread called it. So the models live in a child
process; callers (any daemon thread) send a request over a pipe and wait at
most their timeout. A request that does not answer in time is a failed
attempt (reason ``timeout``): the child is killed and a fresh one started, and
the caller returns at once, never blocking the daemon's loop.

Requests are served one at a time; a caller that cannot get the worker within
its timeout gets reason ``busy``. While a fresh child loads its models,
callers get ``worker_starting`` rather than killing it again.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from agent.face.detect import Reason
from agent.face.liveness import BlinkDetector, LivenessResult
from agent.face.verify import FaceEngine, FaceSettings, VerifyResult

log = logging.getLogger(__name__)

_OK = "ok"
_ERROR = "error"


class _Failed:
    """A request that produced no answer, with the reason to report."""

    def __init__(self, reason: Reason) -> None:
        self.reason = reason


def _serve(conn: Connection, settings: FaceSettings, test_hooks: bool) -> None:
    """Child process body: load models, then answer requests until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        engine = FaceEngine(settings)
        blink = BlinkDetector(engine.landmarks68) if settings.liveness == "blink" else None
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
            elif op == "liveness" and blink is not None:
                value = blink.check(*args)
            elif op == "stall" and test_hooks:
                time.sleep(args[0])
                value = None
            elif op == "ping":
                value = os.getpid()
            else:
                raise ValueError(f"unknown face worker request {op!r}")
            conn.send((seq, _OK, value))
        except Exception as exc:
            # Exception text from cv2/dlib names shapes and types, not people.
            conn.send((seq, _ERROR, type(exc).__name__))


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
        # Fail at configuration time, not in the child, when a model file is missing.
        for which in ("recognition", "landmarks5") + (
            ("landmarks68",) if settings.liveness == "blink" else ()
        ):
            path = settings.model_path(which)
            if not path.is_file():
                raise FileNotFoundError(f"face {which} model not found: {path}")
        self.settings = settings
        self.timeout_s = timeout_s
        self._test_hooks = test_hooks
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._ready = False
        self._closed = False
        self._seq = 0
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

    def __enter__(self) -> FaceWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def rss_bytes(self) -> int | None:
        """Resident memory of the worker process, from /proc."""
        pid = self.pid
        return _rss_bytes(pid) if pid is not None else None

    def stats(self) -> dict[str, int]:
        """Counters: requests, timeouts, restarts, errors, busy, starting."""
        return dict(self._stats)

    def _spawn(self) -> None:
        if self._proc is not None or self._closed:
            return
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_serve,
            args=(child, self.settings, self._test_hooks),
            name="lockgw-face",
            daemon=True,
        )
        proc.start()
        child.close()
        self._proc, self._conn, self._ready = proc, parent, False

    def _kill(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc, self._conn, self._ready = None, None, False
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.kill()
            proc.join(timeout=5)
            with contextlib.suppress(ValueError):
                proc.close()

    def _restart(self, why: str) -> None:
        self._stats["restarts"] += 1
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
            self._stats["busy"] += 1
            return _Failed(Reason.BUSY)
        try:
            self._stats["requests"] += 1
            if self._closed:
                return _Failed(Reason.WORKER_ERROR)
            self._spawn()
            if not self._await_ready(deadline):
                self._stats["starting"] += 1
                return _Failed(Reason.WORKER_STARTING)
            assert self._conn is not None
            self._seq += 1
            try:
                self._conn.send((self._seq, op, args))
            except (OSError, ValueError):
                self._stats["errors"] += 1
                self._restart("request could not be sent")
                return _Failed(Reason.WORKER_ERROR)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._conn.poll(remaining):
                    self._stats["timeouts"] += 1
                    self._restart(f"{op} timed out after {timeout:.2f}s")
                    return _Failed(Reason.TIMEOUT)
                try:
                    seq, status, value = self._conn.recv()
                except (EOFError, OSError):
                    self._stats["errors"] += 1
                    self._restart("worker died")
                    return _Failed(Reason.WORKER_ERROR)
                if seq != self._seq:
                    continue
                if status != _OK:
                    self._stats["errors"] += 1
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

    def stall(self, seconds: float, timeout: float | None = None) -> bool:
        """Test hook: make the worker sleep; True if it answered in time."""
        return not isinstance(self._call("stall", (seconds,), timeout), _Failed)

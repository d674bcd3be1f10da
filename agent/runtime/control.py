"""The local control socket: how the CLI reaches the running daemon.

A Unix stream socket in the runtime directory, mode 0660: file permissions are
the access control (root and the ``lockgw`` group), so there is no network port
and no shared secret. One JSON request per line, one JSON answer per line:
``{"cmd": "status", "args": {…}}`` → ``{"ok": true, "result": …}`` or
``{"ok": false, "error": "…"}``. Handlers must be
thread-safe (they run in a worker thread); none gives personal data out unmasked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any]
MAX_REQUEST_BYTES = 64 * 1024


class ControlError(Exception):
    """The daemon could not be reached, or it refused the request."""


class DaemonRefused(ControlError):
    """The daemon is running and answered, with an error (or not in time)."""


class ControlServer:
    """Serves registered handlers on a Unix socket from the daemon's asyncio loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handlers: dict[str, Handler] = {}
        self._server: asyncio.base_events.Server | None = None
        self.counters: dict[str, int] = {"requests": 0, "bad_requests": 0}

    def register(self, name: str, handler: Handler) -> None:
        """Answer requests ``{"cmd": name}`` with ``handler(args)``."""
        self._handlers[name] = handler

    async def start(self) -> None:
        """Bind the socket (replacing a stale one) with mode 0660."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST_BYTES
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)

    async def stop(self) -> None:
        """Close the socket and remove its file."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            # Handlers may read the store: they run off the loop.
            answer = await asyncio.to_thread(self._answer, line)
            writer.write(json.dumps(answer, ensure_ascii=False, default=str).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            self.counters["bad_requests"] += 1
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, line: bytes) -> dict[str, Any]:
        self.counters["requests"] += 1
        try:
            request = json.loads(line)
        except ValueError:
            self.counters["bad_requests"] += 1
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            self.counters["bad_requests"] += 1
            return {"ok": False, "error": "request needs a string member 'cmd'"}
        handler = self._handlers.get(request["cmd"])
        if handler is None:
            self.counters["bad_requests"] += 1
            return {"ok": False, "error": f"unknown command {request['cmd']!r}"}
        args = request.get("args") or {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "'args' must be an object"}
        try:
            return {"ok": True, "result": handler(args)}
        except Exception as exc:  # a handler failing must not take the socket down
            log.exception("control command failed", extra={"cmd": request["cmd"]})
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def call(path: Path, cmd: str, args: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    """Send one request to the daemon and return its result; :class:`ControlError` otherwise."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        raise ControlError(f"the daemon is not running (no socket at {path})") from None
    except PermissionError:
        raise ControlError(
            f"no permission to use {path}: run as root or a member of the lockgw group"
        ) from None
    except ConnectionRefusedError:
        raise ControlError(f"the daemon is not running (stale socket at {path})") from None
    except TimeoutError:
        raise DaemonRefused(f"the daemon did not answer within {timeout:.0f} s") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise DaemonRefused("the daemon's answer was not JSON") from None
    if not answer.get("ok"):
        raise DaemonRefused(str(answer.get("error", "refused")))
    return answer.get("result")

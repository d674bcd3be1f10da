"""A TCP proxy on loopback whose link can be cut, to play a network outage.

The gateway connects to the proxy instead of the broker. ``cut()`` resets
every connection (both ends see a reset) and refuses new ones until
``restore()``, like a router that lost its uplink. ``cut("blackhole")``
freezes the link instead: connections stay open but no byte passes either
way and new connections hang, like a cable pulled somewhere in between; the
held bytes flow on ``restore()`` (TCP would have retransmitted them), so
only keep-alive timers notice.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Literal

CutMode = Literal["reset", "blackhole"]

_RST_LINGER = struct.pack("ii", 1, 0)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset and wake any thread blocked reading it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


class NetCut:
    """Forwards ``listen`` (127.0.0.1, free port by default) to ``upstream``."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.upstream = upstream
        self._server = socket.create_server((listen_host, listen_port), backlog=32)
        self.host = listen_host
        self.port = int(self._server.getsockname()[1])
        self._mutex = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._flowing = threading.Event()
        self._flowing.set()
        self._mode: CutMode | None = None
        self._closed = False
        self.cuts = 0
        self.refused = 0
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, name="netcut-accept", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to give the client instead of the upstream."""
        return self.host, self.port

    @property
    def is_cut(self) -> bool:
        return self._mode is not None

    @property
    def mode(self) -> CutMode | None:
        """``"reset"``, ``"blackhole"``, or None while the link is up."""
        return self._mode

    @property
    def connections(self) -> int:
        """Connections currently forwarded (or frozen)."""
        with self._mutex:
            return len(self._pairs)

    def cut(self, mode: CutMode = "reset") -> None:
        """Take the link down (see the module docstring for the two modes)."""
        if mode not in ("reset", "blackhole"):
            raise ValueError(f"cut mode must be 'reset' or 'blackhole', not {mode!r}")
        with self._mutex:
            self._mode = mode
            self.cuts += 1
            if mode == "blackhole":
                self._flowing.clear()
                return
            pairs, self._pairs = self._pairs, []
            # Frozen pumps wake up, find their sockets closed and end.
            self._flowing.set()
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)

    def restore(self) -> None:
        """Bring the link back: new connections are forwarded, frozen bytes flow."""
        with self._mutex:
            self._mode = None
            self._flowing.set()

    def close(self) -> None:
        """Stop listening and reset every connection."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._server.close()
        self.cut("reset")
        self._thread.join(5)

    def __enter__(self) -> NetCut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ internals
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._mode == "reset" or self._closed:
                self.refused += 1
                _reset(client)
                continue
            self.accepted += 1
            threading.Thread(
                target=self._connect, args=(client,), name="netcut-connect", daemon=True
            ).start()

    def _wait_flowing(self) -> bool:
        while not self._closed:
            if self._flowing.wait(0.5):
                return True
        return False

    def _connect(self, client: socket.socket) -> None:
        if not self._wait_flowing() or self._mode == "reset":
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        with self._mutex:
            if self._mode == "reset":
                _reset(client)
                _reset(upstream)
                return
            self._pairs.append((client, upstream))
        alive = [2]  # pumps of this pair still running; the last one closes the sockets
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(
                target=self._pump, args=(src, dst, alive), name="netcut-pump", daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, alive: list[int]) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not self._wait_flowing():
                    break
                dst.sendall(data)
        except OSError:
            pass
        # One side ended: end the other (a FIN, as the network would pass it on).
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._mutex:
            self._pairs = [p for p in self._pairs if src not in p]
            alive[0] -= 1
            last = alive[0] == 0
        if last:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

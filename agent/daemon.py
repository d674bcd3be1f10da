"""``lockgw run``: wires the parts, runs until SIGTERM/SIGINT, shuts down cleanly.

The main loop is an asyncio loop. Drivers and the MQTT link run in their own
threads and hand work to the loop with ``call_soon_threadsafe``; nothing on the
loop waits on the network or on face inference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Protocol

from agent import __version__
from agent.config import Config
from agent.health import Heartbeats
from agent.sdnotify import Notifier, watchdog_interval_s
from agent.store import Store

log = logging.getLogger(__name__)

MAIN_LOOP = "main"
# Without a systemd watchdog the loop still beats, for `lockgw status`.
_DEFAULT_BEAT_S = 5.0


class Service(Protocol):
    """A part the daemon starts and stops (link, buses, readers, …)."""

    name: str

    def start(self) -> None:
        """Begin work without blocking (threads of its own)."""

    def stop(self) -> None:
        """Finish the operation in progress, release devices and connections."""


class Daemon:
    """The running gateway."""

    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.heartbeats = Heartbeats()
        self.store: Store | None = None
        self.services: list[Service] = []
        self._stop: asyncio.Event | None = None

    def run(self) -> int:
        """Run until a stop signal; the exit code for the process."""
        return asyncio.run(self._main())

    def request_stop(self) -> None:
        """Ask the main loop to shut down (thread-safe from the loop only)."""
        if self._stop is not None:
            self._stop.set()

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self._open_store()
        self._wire()
        started: list[Service] = []
        try:
            for service in self.services:
                service.start()
                started.append(service)
            self.notifier.ready(f"lockgw {__version__} running")
            log.info(
                "daemon ready",
                extra={"gateway": self.config.gateway.id, "services": len(started)},
            )
            await self._supervise()
        finally:
            self.notifier.stopping()
            log.info("daemon stopping")
            for service in reversed(started):
                try:
                    service.stop()
                except Exception:
                    log.exception("service did not stop cleanly", extra={"service": service.name})
            if self.store is not None:
                self.store.close()
            self.notifier.close()
            log.info("daemon stopped")
        return 0

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("stop signal received", extra={"signal": sig.name})
        self.request_stop()

    def _open_store(self) -> None:
        state_dir = self.config.gateway.state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = Store.open(self.config.db_path)
        if self.store.recovery is not None:
            log.error(
                "started with a fresh database; the corrupt one is kept as evidence",
                extra={"moved_to": str(self.store.recovery.moved_to)},
            )

    def _wire(self) -> None:
        """Build the services from the configuration (later issues add link, buses, …)."""

    async def _supervise(self) -> None:
        """Beat, ping the watchdog while every loop is healthy, wait for the stop signal."""
        assert self._stop is not None
        interval = watchdog_interval_s()
        beat_every = min(interval, _DEFAULT_BEAT_S) if interval else _DEFAULT_BEAT_S
        self.heartbeats.register(MAIN_LOOP, allowed_gap_s=beat_every * 2)
        reported_stale: list[str] = []
        while not self._stop.is_set():
            self.heartbeats.beat(MAIN_LOOP)
            stale = self.heartbeats.stale()
            if not stale:
                if interval:
                    self.notifier.watchdog()
            elif stale != reported_stale:
                log.error("loops not responding; withholding watchdog", extra={"loops": stale})
            reported_stale = stale
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=beat_every)

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
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from agent import __version__
from agent.config.schema import Config
from agent.door.records import iso
from agent.grants.enrol import enroll_pending
from agent.runtime.control import ControlServer
from agent.runtime.gateway import Gateway, Part, build_gateway
from agent.runtime.health import Heartbeats
from agent.runtime.metrics import Metrics, start_metrics
from agent.runtime.sdnotify import Notifier, watchdog_interval_s
from agent.runtime.sizing import building_budget
from agent.state.incidents import mark_reported, unreported_incidents
from agent.state.store import Store

log = logging.getLogger(__name__)

MAIN_LOOP = "main"
# Without a systemd watchdog the loop still beats, for `lockgw status`.
_DEFAULT_BEAT_S = 5.0
_PURGE_EVERY_S = 60.0
_ENROLL_EVERY_S = 2.0
_INCIDENTS_EVERY_S = 10.0


class Daemon:
    """The running gateway."""

    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.heartbeats = Heartbeats()
        self.store: Store | None = None
        self.gateway: Gateway | None = None
        self.control = ControlServer(config.gateway.control_socket)
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def run(self) -> int:
        """Run until a stop signal; the exit code for the process."""
        return asyncio.run(self._main())

    def request_stop(self) -> None:
        """Ask the main loop to shut down (from the loop's thread)."""
        if self._stop is not None:
            self._stop.set()

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        # Door work runs on one bounded executor sized from the building, never a thread
        # per task (the unit's TasksMax comes from the same sizing).
        budget = building_budget(self.config)
        loop.set_default_executor(
            ThreadPoolExecutor(max_workers=budget.door_workers, thread_name_prefix="door")
        )
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self._open_store()
        assert self.store is not None
        self.gateway = build_gateway(self.config, self.store, loop)
        # Openings recorded by a process that died before unlocking are answered first.
        gw = self.gateway
        await asyncio.to_thread(gw.flow.recorder.fail_interrupted, gw.clock.now())
        started: list[Part] = []
        metrics: Metrics | None = None
        try:
            for part in self.gateway.parts:
                part.start()
                started.append(part)
            if self.config.metrics.enabled:
                metrics = start_metrics(self.gateway, self.config.metrics.port)
            await self.control.start()
            self._register_control(loop)
            self._tasks = [
                asyncio.create_task(self._every(_PURGE_EVERY_S, self._purge)),
                asyncio.create_task(self._every(_ENROLL_EVERY_S, self._enroll)),
                asyncio.create_task(self._every(_INCIDENTS_EVERY_S, self._report_incidents)),
                asyncio.create_task(self.gateway.inbox.serve(self.gateway.flow)),
            ]
            self.notifier.ready(f"lockgw {__version__} running")
            log.info(
                "daemon ready",
                extra={"gateway": self.config.gateway.id, "parts": len(started)},
            )
            await self._supervise()
        finally:
            self.notifier.stopping()
            log.info("daemon stopping")
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.control.stop()
            if metrics is not None:
                await asyncio.to_thread(metrics.stop)
            for part in reversed(started):
                try:
                    await asyncio.to_thread(part.stop)
                except Exception:
                    log.exception("part did not stop cleanly", extra={"part": part.name})
            self.gateway.clock.flush()
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

    def _register_control(self, loop: asyncio.AbstractEventLoop) -> None:
        gw = self.gateway
        assert gw is not None
        self.control.register("status", lambda _args: self._status())
        self.control.register(
            "events",
            lambda args: gw.journal.since(
                int(args.get("after_seq", 0)), int(args.get("limit", 100))
            ),
        )
        self.control.register("grants", lambda _args: gw.grants.list_masked(gw.clock.now()))

        def test_lock(args: dict[str, object]) -> dict[str, object]:
            lock = str(args.get("lock", ""))
            if lock not in gw.flow.door_ids():
                raise ValueError(f"no lock {lock!r} in the configuration")
            seconds = float(str(args.get("seconds", 3)))
            future = asyncio.run_coroutine_threadsafe(
                gw.flow.remote_unlock(lock, seconds, "technician test"), loop
            )
            outcome = future.result(timeout=30)
            return {"lock": lock, "granted": outcome.granted, "seqs": list(outcome.seqs)}

        self.control.register("locks.test", test_lock)

    def _status(self) -> dict[str, object]:
        assert self.gateway is not None
        doc = self.gateway.status()
        doc["daemon"] = {"state": "running", "stale_loops": self.heartbeats.stale()}
        return doc

    async def _every(self, period: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic job failed", extra={"job": job.__name__})
            await asyncio.sleep(period)

    async def _purge(self) -> None:
        gw = self.gateway
        assert gw is not None
        await asyncio.to_thread(gw.grants.purge_ended, gw.clock.now())
        await asyncio.to_thread(gw.processor.prune)

    async def _enroll(self) -> None:
        """Face templates for new grants' photos, computed once, off the loop."""
        gw = self.gateway
        assert gw is not None
        if gw.face is None:
            return
        await asyncio.to_thread(enroll_pending, gw.grants, gw.face)

    async def _report_incidents(self) -> None:
        """Gateway incidents (database recovered, clock set back) go out as alerts."""
        gw = self.gateway
        assert gw is not None
        await asyncio.to_thread(self._report_incidents_now, gw)

    def _report_incidents_now(self, gw: Gateway) -> None:
        if gw.reserve is not None:
            gw.reserve.ensure()  # space back after a full disk: the reserve is taken again
        with gw.store.write() as conn:
            incidents = unreported_incidents(conn)
            for incident in incidents:
                gw.outbox.enqueue_in(
                    conn,
                    "alert.gateway_incident",
                    {
                        "at": iso(gw.clock.now()),
                        "incident": incident.kind,
                        "detail": incident.detail,
                        "since": incident.at,
                    },
                )
                mark_reported(conn, incident)
        if incidents:
            gw.outbox.notify()

    def _dead_parts(self) -> list[str]:
        """Parts whose own thread has died: the daemon is not healthy without them."""
        if self.gateway is None:
            return []
        return [part.name for part in self.gateway.parts if not part.alive()]

    async def _supervise(self) -> None:
        """Beat, ping the watchdog while every loop is healthy, wait for the stop signal."""
        assert self._stop is not None
        interval = watchdog_interval_s()
        beat_every = min(interval, _DEFAULT_BEAT_S) if interval else _DEFAULT_BEAT_S
        self.heartbeats.register(MAIN_LOOP, allowed_gap_s=beat_every * 2)
        reported_stale: list[str] = []
        while not self._stop.is_set():
            self.heartbeats.beat(MAIN_LOOP)
            stale = self.heartbeats.stale() + self._dead_parts()
            if not stale:
                if interval:
                    self.notifier.watchdog()
            elif stale != reported_stale:
                log.error("loops not responding; withholding watchdog", extra={"loops": stale})
            reported_stale = stale
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=beat_every)

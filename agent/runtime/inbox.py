"""Device events handed from device threads to the door flow on the asyncio loop.

Buses and readers run in their own threads and are built before the flow that
consumes their events; they are given this inbox, which the daemon serves once the
flow exists. Each event becomes its own task, so one door's visit never waits for
another's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from agent.door.flow import DoorFlow
from drivers.idcard.reader import CardRead
from drivers.osdp.events import LockEvent

log = logging.getLogger(__name__)


class DeviceInbox:
    """A thread-safe hand-over of lock events and card reads to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Callable[[DoorFlow], Awaitable[object]]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[object]] = set()

    def lock_event(self, bus_name: str, event: LockEvent) -> None:
        """From a bus thread: a lock event."""
        self._put(lambda flow: flow.lock_event(bus_name, event))

    def card(self, lock_id: str, card: CardRead) -> None:
        """From a reader thread: a card read at ``lock_id``'s reader."""
        self._put(lambda flow: flow.present_card(lock_id, card))

    def code(self, lock_id: str, source: str, code: str) -> None:
        """From a QR scanner thread (or a camera scan): an electronic-ID code at ``lock_id``."""
        self._put(lambda flow: flow.present_code(lock_id, code, source))

    def _put(self, job: Callable[[DoorFlow], Awaitable[object]]) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, job)

    async def serve(self, flow: DoorFlow) -> None:
        """Hand every event to ``flow``, forever."""
        while True:
            job = await self._queue.get()
            task: asyncio.Task[object] = asyncio.ensure_future(job(flow))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("device event failed", exc_info=task.exception())

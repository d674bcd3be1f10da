"""How many threads the daemon needs, from the configuration; the executor and TasksMax.

Door work that blocks (the store, the bus, the face worker's pipe) runs on one
bounded executor, never a thread per task: ``door_workers`` threads, enough for
every door to have a visit in flight with a few to spare, capped so that a large
building queues instead of growing without end. Long-lived threads are fixed by
the configuration: one per OSDP bus, one per ID reader, the link, the metrics
server. The face worker is a child process in the same cgroup with its own
threads (OpenCV and dlib pools, one per core at most, plus its pipe reader).

``tasks_max`` is what systemd's ``TasksMax`` must allow (it counts every thread of
every process of the unit): the sum above plus a margin for libraries' own
threads (sqlite, asyncio's resolver, paho none). ``systemd/lockgw.service`` sets
the value for the largest building lockgw supports (:data:`LARGEST`), and
``lockgw config check`` says what a given configuration needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from agent.config.schema import Config

# Per-process overhead: the main thread, the link, the metrics server, asyncio's
# helpers, and room for short-lived library threads.
_FIXED = 8
_MARGIN = 16
_MAX_WORKERS = 32


@dataclass(frozen=True)
class ThreadBudget:
    """Threads the daemon may use, and what systemd must allow."""

    door_workers: int
    device_threads: int
    face_threads: int
    tasks_max: int


def thread_budget(
    doors: int, readers: int, buses: int, cameras: int, cpus: int | None = None
) -> ThreadBudget:
    """The budget for a building of ``doors`` doors, ``readers`` ID readers, ``buses``
    OSDP buses and ``cameras`` cameras."""
    cpus = cpus or os.cpu_count() or 2
    door_workers = min(_MAX_WORKERS, max(4, doors + 2))
    device_threads = buses + readers
    # The face worker: its main thread, its pipe, and OpenCV/dlib pools of one per core.
    face_threads = 0 if cameras == 0 else 3 + 2 * cpus
    tasks_max = _FIXED + door_workers + device_threads + face_threads + _MARGIN
    return ThreadBudget(door_workers, device_threads, face_threads, tasks_max)


LARGEST = {"doors": 64, "readers": 64, "buses": 8, "cameras": 64, "cpus": 8}
"""The largest building the unit's TasksMax is set for (64 locks on 8 buses, 8 cores)."""


def building_budget(config: Config) -> ThreadBudget:
    """The budget of the building ``config`` describes."""
    return thread_budget(
        doors=len(config.doors),
        readers=sum(1 for d in config.doors if d.reader_port),
        buses=len(config.buses),
        cameras=sum(1 for d in config.doors if d.camera),
    )

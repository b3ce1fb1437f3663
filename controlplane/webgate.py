"""How many requests one web process runs at once: its Python work, one at a time by default.

A gunicorn process runs its request threads under one GIL. On the launch path a request alternates short
bursts of Python with short waits on Postgres and Redis; with four threads in one process, every wait hands
the GIL to another thread and every answer has to win it back (up to the 5 ms switch interval), and the
threads' working sets evict each other from the CPU caches. Measured with bench/launch_dispatch.py on 2
cores: 4 threads per process cost about 1 ms of CPU more per launch than 1, and the p99 at 250 launches/s
was 31-56 ms against 13-17 ms (bench/README.md). One thread per process would fix that, but then one slow request (a
plan asked of an Airflow that takes seconds to answer, ``?wait=30`` on an action) stops the whole process.

So the processes keep their threads and pass one *gate* between them: a request holds it while it runs
(FIFO, no barging: a newcomer never overtakes a waiting request), and lets go of it while it waits on
something outside the control plane's own database and broker, whose latency it does not control
(:func:`outside`): a connector call, a long poll for an action's end. Other requests run meanwhile; the
one that stepped out comes back to the front of the queue.

The gate is held from the moment a connection's request starts to be read until its answer is written:
gunicorn's own parsing and writing are Python under the same GIL (a gate around the WSGI application
alone measured about 0.4 ms of CPU per launch more, and a longer tail). A new connection that has not sent
anything yet waits for its first bytes outside the gate. ``WEB_ACTIVE_REQUESTS`` (default 1) is its width;
0 turns it off. Only gunicorn processes running ``controlplane.webworker.GatedThreadWorker`` (the
``worker_class`` in gunicorn.conf.py) have a gate: the Celery worker, management commands and tests run
ungated, and there :func:`outside` does nothing.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections

__all__ = ["Gate", "current", "install", "outside"]


class Gate:
    """A FIFO semaphore: ``enter`` waits behind every request already waiting; ``leave`` hands the slot
    straight to the first waiter. (``threading.Semaphore`` lets a newcomer take a slot that was freed
    while older waiters were being woken: under load some requests then wait for many turns, which is
    the tail this gate exists to cut.)"""

    def __init__(self, width: int) -> None:
        if width < 1:
            raise ValueError("a gate needs at least one slot")
        self._free = width
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._held = threading.local()

    def held(self) -> bool:
        """Whether the calling thread holds a slot."""
        return getattr(self._held, "value", False)

    def enter(self, *, first: bool = False) -> None:
        """Take a slot, waiting in line for one; ``first`` joins at the front (a request coming back)."""
        with self._mutex:
            if self._free and not self._waiters:
                self._free -= 1
                self._held.value = True
                return
            turn = threading.Lock()
            turn.acquire()
            if first:
                self._waiters.appendleft(turn)
            else:
                self._waiters.append(turn)
        turn.acquire()  # released by leave() of the thread that hands its slot over
        self._held.value = True

    def leave(self) -> None:
        """Give the slot to the first waiter, or back to the pool."""
        self._held.value = False
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._free += 1


_gate: Gate | None = None


def install(width: int) -> Gate | None:
    """Make this process's gate ``width`` slots wide (0: no gate). Called once per web process, by the
    gunicorn worker class (controlplane/webworker.py) before it serves anything."""
    global _gate
    _gate = Gate(width) if width > 0 else None
    return _gate


def current() -> Gate | None:
    """This process's gate, if it has one."""
    return _gate


@contextmanager
def outside() -> Iterator[None]:
    """Run the body without holding the gate: for waits on systems outside the control plane (connector
    calls, long polls). A no-op where no gate is held (workers, commands, tests, the gate turned off).

    Also a no-op inside a database transaction: a request that stepped out while holding row locks (the
    audit chain head above all) could, on coming back, wait for the gate held by a request that waits
    for those locks. Connector calls are made before the writing transaction opens, so this costs
    nothing today; it keeps a future call inside one from deadlocking the process."""
    gate = _gate
    if gate is None or not gate.held() or any(conn.in_atomic_block for conn in connections.all(initialized_only=True)):
        yield
        return
    gate.leave()
    try:
        yield
    finally:
        gate.enter(first=True)

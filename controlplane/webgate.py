"""How many requests one web process runs at once: its Python work, one at a time by default.

A gunicorn process runs its request threads under one GIL. On the launch path a request alternates short
bursts of Python with short waits on Postgres and Redis; with four threads in one process, every wait hands
the GIL to another thread and every answer has to win it back (up to the 5 ms switch interval), and the
threads' working sets evict each other from the CPU caches. Measured with bench/launch_dispatch.py on 2
cores: 4 threads per process cost about 1 ms of CPU more per launch than 1, and the p99 at 250 launches/s
was 31-56 ms against 13-17 ms (bench/README.md). One thread per process would fix that, but then one slow request (a
plan asked of an Airflow that takes seconds to answer, ``?wait=30`` on an action) stops the whole process.

So the processes keep their threads and pass one *gate* between them: a request holds it while it runs
(FIFO, no barging: a newcomer never overtakes a waiting request). While it waits on something outside the
control plane's own database and broker, whose latency it does not control (:func:`outside`: a connector
call, a long poll for an action's end), it *lends* its slot once that wait has lasted ``LEND_AFTER``
(5 ms) and a request is waiting: the first waiter runs meanwhile, and the lender comes back at the front of
the queue. A short wait (a plan read from a nearby warehouse, about 1 ms) lends nothing: handing the slot
over and waiting to get it back would cost more than the wait (measured: a launch's time inside the gate went
from about 5 to 8-9 ms under load when every connector call let go of the gate at once).

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
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections

__all__ = ["Gate", "install", "outside"]


LEND_AFTER = 0.005  # seconds a holder waits outside before its slot goes to the first waiter


class _Waiter:
    __slots__ = ("granted", "wake")

    def __init__(self) -> None:
        self.granted = False
        self.wake = threading.Lock()
        self.wake.acquire()  # released (under the gate's mutex) to grant the slot or to make it look again


class Gate:
    """A FIFO semaphore whose holders can lend their slot while they wait outside.

    ``enter`` waits behind every request already waiting; ``leave`` hands the slot straight to the first
    waiter. (``threading.Semaphore`` lets a newcomer take a slot that was freed while older waiters were being
    woken: under load some requests then wait for many turns, which is the tail this gate exists to cut.)
    ``step_out``/``step_in`` bracket a wait outside: after ``lend_after`` seconds out, the first waiter takes
    the slot; ``step_in`` then queues at the front until it is given back."""

    def __init__(self, width: int, *, lend_after: float = LEND_AFTER) -> None:
        if width < 1:
            raise ValueError("a gate needs at least one slot")
        if lend_after <= 0:
            raise ValueError("lend_after must be positive")
        self.lend_after = lend_after
        self._free = width
        self._mutex = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        # Holders waiting outside whose slot is not lent yet: thread id -> since. A holder that steps back in
        # and is no longer here had its slot lent.
        self._out: dict[int, float] = {}
        self._local = threading.local()

    def held(self) -> bool:
        """Whether the calling thread holds a slot (a lent one counts until it steps back in)."""
        return getattr(self._local, "held", False)

    def is_out(self) -> bool:
        """Whether the calling thread is between ``step_out`` and ``step_in``."""
        return getattr(self._local, "out", False)

    def enter(self, *, first: bool = False) -> None:
        """Take a slot, waiting in line for one; ``first`` joins at the front (a request coming back)."""
        with self._mutex:
            if self._free and not self._waiters:
                self._free -= 1
                self._local.held = True
                return
            me = _Waiter()
            if first:
                self._waiters.appendleft(me)
            else:
                self._waiters.append(me)
            self._nudge_head()
        while True:
            # Blocks until granted or nudged; with a holder outside, the head looks again after lend_after.
            me.wake.acquire(timeout=self.lend_after if self._out else -1)
            with self._mutex:
                if me.granted:
                    break
                if self._waiters and self._waiters[0] is me and self._borrow():
                    self._waiters.popleft()
                    self._nudge_head()
                    break
        self._local.held = True

    def leave(self) -> None:
        """Give the slot to the first waiter, or back to the pool."""
        self._local.held = False
        with self._mutex:
            if self._waiters:
                head = self._waiters.popleft()
                head.granted = True
                self._release(head)
                self._nudge_head()
            else:
                self._free += 1

    def step_out(self) -> None:
        """The holder starts waiting outside: its slot may be lent after ``lend_after``."""
        self._local.out = True
        with self._mutex:
            self._out[threading.get_ident()] = time.monotonic()
            self._nudge_head()

    def step_in(self) -> None:
        """The holder is back: it goes on at once if its slot was not lent, else queues at the front."""
        me = threading.get_ident()
        self._local.out = False
        with self._mutex:
            if self._out.pop(me, None) is not None:
                return
            self._local.held = False
        self.enter(first=True)

    # Under the mutex ---------------------------------------------------------------------------------------

    def _borrow(self) -> bool:
        due = time.monotonic() - self.lend_after
        lender = min((since, ident) for ident, since in self._out.items()) if self._out else None
        if lender is None or lender[0] > due:
            return False
        del self._out[lender[1]]
        return True

    def _nudge_head(self) -> None:
        """Make the first waiter look again (it may borrow now, or wait with a timeout)."""
        if self._waiters and self._out:
            self._release(self._waiters[0])

    @staticmethod
    def _release(waiter: _Waiter) -> None:
        if waiter.wake.locked():
            waiter.wake.release()


_gate: Gate | None = None


def install(width: int) -> Gate | None:
    """Make this process's gate ``width`` slots wide (0: no gate). Called once per web process, by the
    gunicorn worker class (controlplane/webworker.py) before it serves anything."""
    global _gate
    _gate = Gate(width) if width > 0 else None
    return _gate


@contextmanager
def outside() -> Iterator[None]:
    """Run the body as a wait outside the control plane (connector calls, long polls): if it lasts, the
    slot goes to the first waiting request meanwhile. A no-op where no gate is held (workers, commands,
    tests, the gate turned off).

    Also a no-op inside a database transaction: a request that stepped out while holding row locks (the
    audit chain head above all) could, on coming back, wait for the gate held by a request that waits
    for those locks. Connector calls are made before the writing transaction opens, so this costs
    nothing today; it keeps a future call inside one from deadlocking the process."""
    gate = _gate
    if (
        gate is None
        or not gate.held()
        or gate.is_out()
        or any(conn.in_atomic_block for conn in connections.all(initialized_only=True))
    ):
        yield
        return
    gate.step_out()
    try:
        yield
    finally:
        gate.step_in()

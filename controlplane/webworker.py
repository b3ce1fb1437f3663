"""gunicorn's threaded worker with the request gate of controlplane/webgate.py.

``gunicorn.conf.py`` (read by gunicorn from the working directory) names it as ``worker_class``, so the
demo, docker-compose and the benchmarks all run it. Everything else is gunicorn's ``gthread`` worker: its
poller keeps idle keep-alive connections without a thread, its pool runs the requests; this class only
makes the pool's threads take turns (see webgate for why and measurements).
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.workers import gthread  # type: ignore[import-untyped]

from controlplane import webgate


class GatedThreadWorker(gthread.ThreadWorker):
    """A ``gthread`` worker whose threads handle one request at a time (``WEB_ACTIVE_REQUESTS``)."""

    gate: webgate.Gate | None = None

    def init_process(self) -> None:
        # After the fork, before gunicorn's init_process loads the application and starts serving (it does
        # not return). Reading a setting configures Django's settings, as the application would.
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
        from django.conf import settings

        self.gate = webgate.install(settings.CONTROLPLANE["WEB_ACTIVE_REQUESTS"])
        super().init_process()

    def handle(self, conn: Any) -> Any:
        """gthread's ``handle`` inside the gate. A new connection first waits for its first bytes outside
        it (gthread's own wait, which hands a silent connection back to the poller after a few seconds):
        a client that connects and says nothing must not hold up the process."""
        gate = self.gate
        if gate is None:
            return super().handle(conn)
        fresh = not conn.initialized and not conn.data_ready
        if fresh and not conn.wait_for_data(gthread.DEFAULT_WORKER_DATA_TIMEOUT):
            return gthread._DEFER
        gate.enter()
        try:
            return super().handle(conn)
        finally:
            gate.leave()

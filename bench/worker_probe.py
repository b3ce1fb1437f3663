"""A Celery worker with timing probes on the action runner's steps, for the dispatch profile.

    BENCH_PROBE_FILE=/tmp/probe.jsonl python bench/worker_probe.py -A controlplane worker --pool=prefork ...

Used by ``bench/launch_dispatch.py`` (``--profile``); not a product entry point. Each prefork child wraps,
in its own memory only, the steps of ``controlplane.actions.runner`` between the task's start and the first
log line the attempt writes (``attempt N: ...``, right before the connector is called; the line is stamped
then and stored later, so the span ends at the write), and every SQL statement of Django's
connection in that span (and the connection set-up: Celery's Django fixup closes the database connections
before and after every task); one JSON line per action goes to ``BENCH_PROBE_FILE``::

    {"action_id": ..., "t0": <wall clock at task start>, "steps": [[label, wall_s, cpu_s], ...],
     "sql": [[statement, seconds], ...], "total": [wall_s, cpu_s]}

While the file named by ``BENCH_PROBE_KEEP_DB_FLAG`` exists, the fixup's per-task close is skipped in the
pool processes, to show what keeping the connection across tasks (``CONN_MAX_AGE`` honoured, as
``CELERY_DB_REUSE_MAX`` would allow) gives; the benchmark toggles it between blocks of actions.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_state = threading.local()


def _record() -> dict[str, Any] | None:
    rec: dict[str, Any] | None = getattr(_state, "record", None)
    return rec


def _timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        rec = _record()
        if rec is None or rec.get("done"):
            return fn(*args, **kwargs)
        c, t = time.process_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if not rec.get("done"):
                rec["steps"].append([label, time.perf_counter() - t, time.process_time() - c])

    return wrapper


def install() -> None:
    """Wrap the runner's steps in this (child) process and write one JSON line per action."""
    from django.db import connections

    from controlplane.actions import runner

    out_path = Path(os.environ["BENCH_PROBE_FILE"])
    original_execute = runner.action_execute

    def action_execute(*, action_id: str, request_id: str = "") -> None:
        rec: dict[str, Any] = {
            "action_id": action_id,
            "pid": os.getpid(),
            "t0": time.time(),
            "steps": [],
            "sql": [],
            "start": (time.perf_counter(), time.process_time()),
        }
        _state.record = rec
        try:
            original_execute(action_id=action_id, request_id=request_id)
        finally:
            _state.record = None
            if "total" in rec:
                rec.pop("start", None)
                rec.pop("done", None)
                with out_path.open("a") as out:
                    out.write(json.dumps(rec) + "\n")

    journal_cls: Any = runner._Journal
    original_write = journal_cls.write

    def write(self: Any, *args: Any, **kwargs: Any) -> None:
        rec = _record()
        if rec is not None and not rec.get("done"):  # the attempt's first line: the connector is next
            t0, c0 = rec["start"]
            rec["total"] = [time.perf_counter() - t0, time.process_time() - c0]
            rec["done"] = True
        original_write(self, *args, **kwargs)

    def sql_wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            rec = _record()
            if rec is not None and not rec.get("done"):
                rec["sql"].append([sql, time.perf_counter() - t])

    runner.action_execute = action_execute  # the task looks it up on the module at call time
    journal_cls.write = write
    runner.close_old_connections = _timed("close_old_connections", runner.close_old_connections)
    runner._claim = _timed("claim (whole transaction)", runner._claim)
    runner.audit_record = _timed("    audit_record action.started", runner.audit_record)
    runner.connector_for = _timed("connector build", runner.connector_for)
    runner._Lease.__enter__ = _timed("lease thread start", runner._Lease.__enter__)  # type: ignore[method-assign]
    db = connections["default"]
    db.connect = _timed("new DB connection (connect + session setup)", db.connect)  # type: ignore[method-assign]
    flag = os.environ.get("BENCH_PROBE_KEEP_DB_FLAG")
    if flag:
        from celery.fixups import django as celery_django

        fixup_cls: Any = celery_django.DjangoWorkerFixup  # type: ignore[attr-defined]  # not in celery-types
        original_close = fixup_cls.close_database

        def close_database(self: Any, **kwargs: Any) -> None:
            if not Path(flag).exists():
                original_close(self, **kwargs)

        fixup_cls.close_database = close_database
    # CONN_HEALTH_CHECKS: the first query after close_old_connections pings with a raw "SELECT 1" that
    # bypasses execute wrappers; time it separately.
    db.is_usable = _timed("connection health check (SELECT 1)", db.is_usable)  # type: ignore[method-assign]
    db.execute_wrappers.append(sql_wrapper)


def main() -> None:
    from celery.signals import worker_process_init

    worker_process_init.connect(lambda **_: install(), weak=False)
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *sys.argv[1:]]
    celery_main()


if __name__ == "__main__":
    main()

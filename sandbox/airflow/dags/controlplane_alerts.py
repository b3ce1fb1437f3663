# mypy: ignore-errors
"""Failure alerts from Airflow to the control plane: copy this file next to your DAGs and add two lines.

    from controlplane_alerts import dag_failure_alert, task_failure_alert

    with DAG(..., on_failure_callback=dag_failure_alert,
             default_args={"on_failure_callback": task_failure_alert, ...}):

Each failure POSTs one JSON document to the control plane's alert endpoint (the same shape for a failed
task and a failed DAG run; ``task_id`` and ``try_number`` are null for the DAG run)::

    {"source": "airflow", "dag_id": "...", "task_id": "..." | null, "run_id": "...",
     "logical_date": "2024-01-02T00:00:00+00:00" | null, "try_number": 1 | null, "state": "failed",
     "exception": "<str(exception), at most 2000 characters; empty if none>", "log_url": "...",
     "base_url": "..."}

Where to: the Airflow Variable ``controlplane_alert_url``, else the environment variable
``CONTROLPLANE_ALERT_URL``; neither set means no alert. Authorization: ``Bearer <token>`` from the Variable
``controlplane_alert_token``, else ``CONTROLPLANE_ALERT_TOKEN``. Standard library only, a 5 s timeout,
and it never raises: an unreachable control plane must not change what happens to the task.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0
MAX_EXCEPTION_CHARS = 2000


def _setting(variable: str, env: str) -> str | None:
    try:
        from airflow.sdk import Variable

        value = Variable.get(variable, default=None)
    except Exception:  # no Variable backend reachable here: fall back to the environment
        value = None
    return value or os.environ.get(env) or None


def _base_url() -> str:
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 2
        from airflow.configuration import conf
    try:
        return str(conf.get("api", "base_url", fallback="") or "").rstrip("/")
    except Exception:
        return os.environ.get("AIRFLOW__API__BASE_URL", "").rstrip("/")


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)


def _state(value: Any, default: str) -> str:
    value = getattr(value, "value", value)  # TaskInstanceState / DagRunState enums
    return str(value) if value else default


def build_payload(context: dict[str, Any], *, task_level: bool) -> dict[str, Any]:
    """The alert document for a failure callback's ``context``."""
    dag_run = context.get("dag_run")
    dag = context.get("dag")
    ti = context.get("ti") if task_level else None
    base_url = _base_url()
    dag_id = getattr(ti, "dag_id", None) or getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", None)
    run_id = context.get("run_id") or getattr(dag_run, "run_id", None)
    logical_date = context.get("logical_date") or getattr(dag_run, "logical_date", None)
    if task_level:
        error = context.get("exception")
        state = _state(getattr(ti, "state", None), "failed")
        try:
            log_url = ti.log_url
        except Exception:
            log_url = f"{base_url}/dags/{dag_id}/runs/{run_id}/tasks/{getattr(ti, 'task_id', '')}"
    else:
        error = context.get("reason") or context.get("exception")
        state = _state(getattr(dag_run, "state", None), "failed")
        if state in ("running", "queued"):  # the callback can run before the run's state is written
            state = "failed"
        log_url = f"{base_url}/dags/{dag_id}/runs/{run_id}"
    return {
        "source": "airflow",
        "dag_id": dag_id,
        "task_id": getattr(ti, "task_id", None) if task_level else None,
        "run_id": run_id,
        "logical_date": _iso(logical_date),
        "try_number": getattr(ti, "try_number", None) if task_level else None,
        "state": state,
        "exception": str(error)[:MAX_EXCEPTION_CHARS] if error is not None else "",
        "log_url": log_url,
        "base_url": base_url,
    }


def send_alert(payload: dict[str, Any]) -> bool:
    """POST ``payload`` to the control plane; True if it answered 2xx. Never raises."""
    try:
        url = _setting("controlplane_alert_url", "CONTROLPLANE_ALERT_URL")
        if not url:
            return False
        headers = {"Content-Type": "application/json", "User-Agent": "airflow-controlplane-alerts/1"}
        token = _setting("controlplane_alert_token", "CONTROLPLANE_ALERT_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            ok = 200 <= response.status < 300
        log.info("control plane alert sent to %s: HTTP %s", url, response.status)
        return ok
    except Exception as exc:
        log.warning("control plane alert not sent: %s", exc)
        return False


def task_failure_alert(context: dict[str, Any]) -> None:
    """``on_failure_callback`` for tasks (put it in the DAG's ``default_args``)."""
    try:
        send_alert(build_payload(context, task_level=True))
    except Exception as exc:
        log.warning("control plane alert failed: %s", exc)


def dag_failure_alert(context: dict[str, Any]) -> None:
    """``on_failure_callback`` for the DAG itself (one alert per failed DAG run)."""
    try:
        send_alert(build_payload(context, task_level=False))
    except Exception as exc:
        log.warning("control plane alert failed: %s", exc)

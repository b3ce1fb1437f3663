"""The sandbox Airflow 3 is real: started by sandbox.airflow, driven over its REST API, stopped cleanly.

One Airflow per module (about 20 s to start), on a fresh metadata database in the sandbox Postgres
(SANDBOX_PG_URL), with 4-second JWTs so token expiry can be observed. The DAGs are the sandbox's own
(sandbox/airflow/dags); the failure callback posts to a small HTTP server this module runs.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sandbox.airflow import (
    SANDBOX_DAGS,
    AirflowApiError,
    AirflowServer,
    airflow_processes,
    api_request,
)
from tests.conftest import AIRFLOW_JWT_LIFETIME_S as JWT_LIFETIME_S
from tests.conftest import airflow_set_variable, start_test_airflow

ALERT_TOKEN = "alert-token-" + uuid.uuid4().hex[:8]
BRONZE = "data_ingestion_bronze"
ALERT_FIELDS = {
    "source",
    "dag_id",
    "task_id",
    "run_id",
    "logical_date",
    "try_number",
    "state",
    "exception",
    "log_url",
    "base_url",
}


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_run(server: AirflowServer, dag_id: str, run_id: str, *, timeout: float = 90) -> dict[str, Any]:
    """The DAG run once it reached a final state (success or failed)."""

    def finished() -> dict[str, Any] | None:
        run = server.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None

    return wait_until(finished, timeout=timeout, what=f"{dag_id} run {run_id} to finish")


def task_states(server: AirflowServer, dag_id: str, run_id: str) -> dict[str, tuple[str | None, int]]:
    tis = server.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {ti["task_id"]: (ti["state"], ti["try_number"]) for ti in tis}


def trigger(server: AirflowServer, dag_id: str, **body: Any) -> str:
    run_id = body.pop("dag_run_id", None) or f"test__{uuid.uuid4().hex[:10]}"
    run = server.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, **body})
    assert run["dag_run_id"] == run_id
    return run_id


# ---------------------------------------------------------------------------------------------- fixtures


class AlertSink:
    """A stand-in for the control plane's alert endpoint: records every POST (headers and JSON body)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.received.append(
                    {"path": self.path, "headers": dict(self.headers.items()), "json": json.loads(body or b"null")}
                )
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/v1/alerts/airflow"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def payloads(self, run_id: str) -> list[dict[str, Any]]:
        return [r["json"] for r in self.received if isinstance(r["json"], dict) and r["json"].get("run_id") == run_id]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def alert_sink(airflow: AirflowServer) -> Iterator[AlertSink]:
    sink = AlertSink()
    airflow_set_variable(airflow, "controlplane_alert_url", sink.url)
    airflow_set_variable(airflow, "controlplane_alert_token", ALERT_TOKEN)
    airflow_set_variable(airflow, "data_ingestion_bronze_fixed", "false")
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def failed_bronze_run(airflow: AirflowServer, alert_sink: AlertSink) -> str:
    """A manual run of data_ingestion_bronze (run id chosen by us, no logical date), finished: failed."""
    run_id = trigger(airflow, BRONZE, conf={"source": "test"}, note="triggered by the sandbox tests")
    run = wait_for_run(airflow, BRONZE, run_id)
    assert run["state"] == "failed", run
    return run_id


# ------------------------------------------------------------------------------------------------- tests


def test_the_sandbox_dags_are_listed_with_their_pause_state(airflow: AirflowServer) -> None:
    dags = {d["dag_id"]: d for d in airflow.api("GET", "/api/v2/dags", params={"limit": 100})["dags"]}
    assert set(SANDBOX_DAGS) <= set(dags)
    assert dags["retail_ingestion_pipeline"]["is_paused"] is True
    for dag_id in ("data_ingestion_bronze", "retail_transformation_pipeline", "stuck_report_pipeline"):
        assert dags[dag_id]["is_paused"] is False, dag_id
    tasks = {t["task_id"]: t for t in airflow.api("GET", f"/api/v2/dags/{BRONZE}/tasks")["tasks"]}
    assert set(tasks) == {"ingest_orders", "ingest_customers", "validate_ingestion"}
    assert tasks["ingest_orders"]["downstream_task_ids"] == ["validate_ingestion"]
    assert airflow.api("GET", "/api/v2/importErrors")["total_entries"] == 0


def test_ingestion_fails_at_ingest_orders_with_a_readable_error(airflow: AirflowServer, failed_bronze_run: str) -> None:
    states = task_states(airflow, BRONZE, failed_bronze_run)
    assert states == {
        "ingest_orders": ("failed", 1),
        "ingest_customers": ("success", 1),
        "validate_ingestion": ("upstream_failed", 0),
    }
    log = airflow.api(
        "GET",
        f"/api/v2/dags/{BRONZE}/dagRuns/{failed_bronze_run}/taskInstances/ingest_orders/logs/1",
        params={"full_content": "true"},
    )
    text = json.dumps(log["content"])
    assert "HTTP 503 Service Unavailable" in text
    assert "Source system unavailable" in text


def test_failure_callbacks_post_the_documented_payload(
    airflow: AirflowServer, alert_sink: AlertSink, failed_bronze_run: str
) -> None:
    def both_alerts() -> list[dict[str, Any]] | None:
        payloads = alert_sink.payloads(failed_bronze_run)
        return payloads if {p["task_id"] for p in payloads} >= {"ingest_orders", None} else None

    payloads = wait_until(both_alerts, timeout=60, what="the task and DAG failure alerts")
    print(json.dumps(payloads, indent=2))  # shown when the test fails (or with -s)
    task_alert = next(p for p in payloads if p["task_id"] == "ingest_orders")
    dag_alert = next(p for p in payloads if p["task_id"] is None)
    for alert in (task_alert, dag_alert):
        assert set(alert) == ALERT_FIELDS
        assert alert["source"] == "airflow"
        assert alert["dag_id"] == BRONZE
        assert alert["state"] == "failed"
        assert alert["logical_date"] is None  # triggered with "logical_date": null
        assert alert["base_url"] == airflow.url
        assert alert["log_url"].startswith(f"{airflow.url}/dags/{BRONZE}/runs/{failed_bronze_run}")
    assert task_alert["try_number"] == 1
    assert "Source system unavailable" in task_alert["exception"]
    assert "HTTP 503" in task_alert["exception"]
    assert len(task_alert["exception"]) <= 2000
    assert (
        task_alert["log_url"]
        == f"{airflow.url}/dags/{BRONZE}/runs/{failed_bronze_run}/tasks/ingest_orders?try_number=1"
    )
    assert dag_alert["try_number"] is None
    assert dag_alert["exception"]  # the reason Airflow gives, e.g. "task_failure"
    assert all(r["headers"].get("Authorization") == f"Bearer {ALERT_TOKEN}" for r in alert_sink.received)
    assert all(r["path"] == "/api/v1/alerts/airflow" for r in alert_sink.received)
    # The successful task sent nothing.
    assert "ingest_customers" not in {p["task_id"] for p in payloads}
    # ... and the control plane's intake accepts both as they are.
    # (a run without a logical date is named by its run id).
    from controlplane.incidents.alerts import AirflowFailureAlert

    assert (
        AirflowFailureAlert.model_validate(task_alert).fingerprint
        == f"airflow:{airflow.url}:{BRONZE}:ingest_orders:run={failed_bronze_run}"
    )
    assert (
        AirflowFailureAlert.model_validate(dag_alert).fingerprint
        == f"airflow:{airflow.url}:{BRONZE}:-:run={failed_bronze_run}"
    )


def test_fixing_the_source_and_clearing_downstream_makes_the_run_succeed(
    airflow: AirflowServer, failed_bronze_run: str
) -> None:
    airflow_set_variable(airflow, "data_ingestion_bronze_fixed", "true")
    assert airflow.api("GET", "/api/v2/variables/data_ingestion_bronze_fixed")["value"] == "true"
    clear = {
        "dag_run_id": failed_bronze_run,
        "task_ids": ["ingest_orders"],
        "only_failed": True,
        "include_downstream": True,
        "reset_dag_runs": True,
    }
    preview = airflow.api("POST", f"/api/v2/dags/{BRONZE}/clearTaskInstances", {**clear, "dry_run": True})
    assert sorted(ti["task_id"] for ti in preview["task_instances"]) == ["ingest_orders", "validate_ingestion"]
    assert task_states(airflow, BRONZE, failed_bronze_run)["ingest_orders"] == ("failed", 1)  # dry run: untouched

    cleared = airflow.api("POST", f"/api/v2/dags/{BRONZE}/clearTaskInstances", {**clear, "dry_run": False})
    assert sorted(ti["task_id"] for ti in cleared["task_instances"]) == ["ingest_orders", "validate_ingestion"]
    run = wait_for_run(airflow, BRONZE, failed_bronze_run)
    assert run["state"] == "success", task_states(airflow, BRONZE, failed_bronze_run)
    assert task_states(airflow, BRONZE, failed_bronze_run) == {
        "ingest_orders": ("success", 2),
        "ingest_customers": ("success", 1),  # not failed, so not cleared
        "validate_ingestion": ("success", 1),
    }


def test_tokens_expire_and_a_new_one_works(airflow: AirflowServer) -> None:
    token = airflow.token()
    assert api_request(airflow.url, "GET", "/api/v2/version", token=token)["version"].startswith("3.3.")
    time.sleep(JWT_LIFETIME_S + 1.5)
    with pytest.raises(AirflowApiError) as expired:
        api_request(airflow.url, "GET", "/api/v2/dags", token=token)
    assert expired.value.status == 401
    assert api_request(airflow.url, "GET", "/api/v2/dags", token=airflow.token())["total_entries"] >= 4
    with pytest.raises(AirflowApiError) as wrong:
        airflow.token(password="not-the-password")
    assert wrong.value.status == 401
    with pytest.raises(AirflowApiError) as anonymous:
        api_request(airflow.url, "GET", "/api/v2/dags", token=None)
    assert anonymous.value.status == 401


def test_a_viewer_reads_but_cannot_change(airflow: AirflowServer) -> None:
    token = airflow.token("viewer", airflow.viewer_password)
    assert api_request(airflow.url, "GET", "/api/v2/dags/retail_ingestion_pipeline", token=token)["is_paused"]
    with pytest.raises(AirflowApiError) as forbidden:
        api_request(airflow.url, "PATCH", "/api/v2/dags/retail_ingestion_pipeline", {"is_paused": False}, token=token)
    assert forbidden.value.status == 403
    assert airflow.api("GET", "/api/v2/dags/retail_ingestion_pipeline")["is_paused"] is True


def test_pause_and_unpause(airflow: AirflowServer) -> None:
    path = "/api/v2/dags/retail_ingestion_pipeline"
    try:
        assert airflow.api("PATCH", path, {"is_paused": False})["is_paused"] is False
        assert airflow.api("GET", path)["is_paused"] is False
    finally:
        assert airflow.api("PATCH", path, {"is_paused": True}, params={"update_mask": "is_paused"})["is_paused"]


def test_backfill_dry_run_create_and_cancel(airflow: AirflowServer) -> None:
    dag_id = "retail_transformation_pipeline"
    body = {"dag_id": dag_id, "from_date": "2024-03-01T00:00:00Z", "to_date": "2024-03-03T00:00:00Z"}
    preview = airflow.api("POST", "/api/v2/backfills/dry_run", {**body, "reprocess_behavior": "failed"})
    assert [b["logical_date"] for b in preview["backfills"]] == [
        "2024-03-01T00:00:00Z",
        "2024-03-02T00:00:00Z",
        "2024-03-03T00:00:00Z",
    ]
    backfill = airflow.api("POST", "/api/v2/backfills", {**body, "reprocess_behavior": "failed", "max_active_runs": 3})
    with pytest.raises(AirflowApiError) as busy:  # one active backfill per DAG
        airflow.api("POST", "/api/v2/backfills", {**body, "from_date": "2024-05-01T00:00:00Z"})
    assert busy.value.status == 409

    def all_succeeded() -> bool:
        runs = airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"run_type": "backfill"})["dag_runs"]
        mine = [r for r in runs if r["logical_date"].startswith("2024-03-0")]
        return len(mine) == 3 and all(r["state"] == "success" for r in mine)

    wait_until(all_succeeded, timeout=90, what="the 3 backfill runs to succeed")
    # A finished backfill still blocks the next one until a scheduler timer (every 30 s, not configurable)
    # sets its completed_at; cancelling it closes it at once (409 if the timer was quicker).
    try:
        airflow.api("PUT", f"/api/v2/backfills/{backfill['id']}/cancel")
    except AirflowApiError as exc:
        assert exc.status == 409, exc
    assert airflow.api("GET", f"/api/v2/backfills/{backfill['id']}")["completed_at"] is not None

    long = airflow.api(
        "POST",
        "/api/v2/backfills",
        {**body, "from_date": "2024-06-01T00:00:00Z", "to_date": "2024-06-30T00:00:00Z", "max_active_runs": 1},
    )
    cancelled = airflow.api("PUT", f"/api/v2/backfills/{long['id']}/cancel")
    assert cancelled["completed_at"] is not None
    assert cancelled["is_paused"] is True
    runs = airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"run_type": "backfill", "limit": 100})
    june = [r["state"] for r in runs["dag_runs"] if r["logical_date"].startswith("2024-06")]
    assert len(june) == 30
    assert "queued" not in june  # cancel fails the queued runs; a running one may finish
    assert june.count("failed") >= 28
    listed = airflow.api("GET", "/api/v2/backfills", params={"dag_id": dag_id})["backfills"]
    assert {b["id"] for b in listed} >= {backfill["id"], long["id"]}


def test_a_stuck_run_is_ended_by_failing_its_stuck_task(airflow: AirflowServer) -> None:
    dag_id = "stuck_report_pipeline"
    run_id = trigger(airflow, dag_id)
    wait_until(
        lambda: task_states(airflow, dag_id, run_id).get("generate_report", (None, 0))[0] == "running",
        timeout=60,
        what="generate_report to be running",
    )
    sleepers = wait_until(
        lambda: [pid for pid in airflow_processes(airflow.root) if _cmdline(pid).startswith("sleep")],
        timeout=15,
        what="the stuck task's sleep process",
    )
    run = airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    assert run["state"] == "running"
    patched = airflow.api(
        "PATCH",
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/generate_report",
        {"new_state": "failed", "note": "stuck: failed by the sandbox tests"},
    )
    assert [ti["state"] for ti in patched["task_instances"]] == ["failed"]
    assert wait_for_run(airflow, dag_id, run_id, timeout=60)["state"] == "failed"
    wait_until(
        lambda: not any(_cmdline(pid).startswith("sleep") for pid in sleepers),
        timeout=30,
        what="the stuck task's process to be killed",
    )


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def test_a_killed_scheduler_is_restarted(airflow: AirflowServer) -> None:
    supervisor = airflow.component_pids()["scheduler"]
    assert supervisor is not None
    (scheduler,) = _children(supervisor)
    workers = _children(scheduler)
    assert workers, "the LocalExecutor's worker processes"
    os.kill(scheduler, signal.SIGKILL)

    def restarted() -> int | None:
        children = [pid for pid in _children(supervisor) if pid != scheduler]
        return children[0] if children else None

    wait_until(restarted, timeout=15, what="the supervisor to start a new scheduler", interval=0.2)
    killed_at = time.time()
    # The killed scheduler's workers hold its Postgres sockets (and so any transaction it had open, with its
    # row locks): the supervisor ends them before the restart.
    assert [pid for pid in workers if Path(f"/proc/{pid}").exists() and _cmdline(pid)] == []

    def fresh_heartbeat() -> bool:
        health = airflow.api("GET", "/api/v2/monitor/health")["scheduler"]
        beat = health.get("latest_scheduler_heartbeat")
        return health["status"] == "healthy" and beat is not None and _epoch(beat) > killed_at

    wait_until(fresh_heartbeat, timeout=60, what="a heartbeat from the new scheduler")
    # ... and it schedules: a run triggered now completes.
    run_id = trigger(airflow, "retail_transformation_pipeline")
    assert wait_for_run(airflow, "retail_transformation_pipeline", run_id)["state"] == "success"


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_stop_ends_every_process_and_is_idempotent(airflow: AirflowServer) -> None:
    # A hanging task runs in a process group of its own: stop must end it too.
    run_id = trigger(airflow, "stuck_report_pipeline")
    wait_until(
        lambda: task_states(airflow, "stuck_report_pipeline", run_id).get("generate_report", (None, 0))[0] == "running",
        timeout=60,
        what="generate_report to be running",
    )
    sleepers = wait_until(
        lambda: [pid for pid in airflow_processes(airflow.root) if _cmdline(pid).startswith("sleep")],
        timeout=15,
        what="the stuck task's sleep process",
    )
    assert len(airflow_processes(airflow.root)) >= 9  # 4 supervisors, 4 components, executor workers, the task

    try:
        assert airflow.stop() is True
        assert airflow_processes(airflow.root) == []
        assert not any(Path(f"/proc/{pid}").exists() and _cmdline(pid).startswith("sleep") for pid in sleepers)
        assert airflow.stop() is False
        with pytest.raises(OSError):
            api_request(airflow.url, "GET", "/api/v2/monitor/health", token=None, timeout=2)
    finally:
        restarted = start_test_airflow(airflow.root)  # the session's other tests share this Airflow
        assert restarted.url == airflow.url
        # The run outlives its killed task: it would hold the DAG's one active run (max_active_runs=1) until
        # the scheduler's heartbeat timeout (90 s), and a later test's run of it would wait in the queue.
        restarted.api("PATCH", f"/api/v2/dags/stuck_report_pipeline/dagRuns/{run_id}", {"state": "failed"})


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""

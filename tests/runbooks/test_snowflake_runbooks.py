"""The 001 runbooks' Snowflake steps are executable: the loader accepts them against the registered Snowflake
connector (check and verb names, parameters, target kinds), and runs started on incidents the connectors' watch
opened walk the seed-001 warehouse on the Snowflake emulator end to end: the auto-suspended task graph is read,
resumed (its failed run retried) and verified, then its history shows the run succeeded; the paused pipe is
read, resumed and reads back RUNNING with its waiting file loaded.

Each test rebuilds the seed (``sandbox.snowflake.seed``: idempotent, OR REPLACE) and the demo's Snowflake
catalog (seed_demo's ``seed_snowflake``), so it starts from the seed's state whatever ran before.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from connectors.snowflake import SnowflakeConnector
from connectors.snowflake.client import scalar
from controlplane.actions.models import ActionRun
from controlplane.actions.runner import action_execute
from controlplane.actions.services import action_approve
from controlplane.audit.context import Channel, change_context
from controlplane.catalog.management.commands.seed_demo import SeedReport, seed_snowflake
from controlplane.catalog.models import Connection
from controlplane.catalog.services import connector_for
from controlplane.incidents.models import Incident
from controlplane.incidents.services import connections_watch
from runbooks import services
from runbooks.loader import LIBRARY, library_files, parse_file
from runbooks.models import RunbookRun, RunbookVersion
from runbooks.schema import ActionStep, CheckStep
from runbooks.selectors import runbooks_for_incident
from sandbox.snowflake.seed import FAILURE
from sandbox.snowflake.seed import seed as seed_001
from tests.runbooks.test_runner import as_user
from tests.runbooks.test_runner import steps as step_rows

RUNBOOKS_001 = sorted(p.stem for p in library_files() if p.name.startswith("001-"))
# the steps that waited for the Snowflake connector before it existed (version 1), by their ids now
WAITED = {
    "001-backfill-facts": {"counts_before", "clear_and_reload", "counts_after"},
    "001-backfill-raw": {"missing_period", "snowpipe_ingests", "copy_into", "loaded", "transform"},
    "001-dq-check-failure": {"invalid_records", "rerun_transformation", "invalid_after"},
    "001-freshness-alert": {"hours_since_load", "pipe", "tasks"},
    "001-new-environment": {"clone", "verify"},
    "001-pipeline-status": {"tasks", "stream", "pipe"},
    "001-scale-warehouse": {"status", "scale_up", "scale_down", "status_after"},
    "001-scd2-dimension-failure": {"overlaps", "rerun_procedure", "overlaps_after"},
    "001-snowpipe-failure": {"pipe_status", "usage_history", "resume_pipe", "pipe_after"},
    "001-transformation-task-failure": {"task_history", "resume_task", "execute_task", "task_after"},
}
ROOT = "dev.snowflake.task_bronze_to_silver_pos"
PAUSED_PIPE = "dev.snowflake.pipe_inventory_data"


def test_the_001_snowflake_steps_run_the_connectors_checks_and_verbs() -> None:
    # the 35 steps of version 1, less the two delete/call steps of 001-backfill-facts now one backfill
    assert sum(len(ids) for ids in WAITED.values()) == 34
    for name in RUNBOOKS_001:
        parsed = parse_file(LIBRARY / f"{name}.yaml")
        assert parsed.problems == [], [str(p) for p in parsed.problems]
        runbook = parsed.runbook
        assert runbook is not None
        assert not [s.id for s in runbook.steps if getattr(s, "waits_for", None) == "snowflake"], name
        kinds = {p.name: p.target_kinds for p in runbook.parameters if p.type == "target"}
        for step in runbook.steps:
            if not isinstance(step, CheckStep | ActionStep) or step.waits_for is not None:
                continue
            spec: Any = (
                SnowflakeConnector.check_class(step.check)
                if isinstance(step, CheckStep)
                else SnowflakeConnector.verb_class(step.verb)
            )
            param = step.target.strip("{} ").removeprefix("params.")
            if spec is None or not set(kinds.get(param, ())) <= set(spec.target_kinds):
                assert step.id not in WAITED.get(name, set()), f"{name} {step.id}: not on a Snowflake target"
                continue  # an Airflow step of the same runbook
            assert kinds[param], f"{name} {step.id}: target parameter {param} names no kinds"
            assert set(step.params) <= set(spec.params_model.model_fields), f"{name} {step.id}: {step.params}"
        executable = {
            s.id
            for s in runbook.steps
            if (isinstance(s, CheckStep) and s.waits_for is None and SnowflakeConnector.check_class(s.check))
            or (isinstance(s, ActionStep) and s.waits_for is None and SnowflakeConnector.verb_class(s.verb))
        }
        assert WAITED.get(name, set()) <= executable, f"{name}: {WAITED.get(name, set()) - executable} still wait"


@pytest.fixture
def seeded(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed-001 warehouse rebuilt on the emulator, the demo's Snowflake catalog, the 001 runbooks loaded."""
    url = os.environ.get("SANDBOX_SNOWFLAKE_URL")
    if not url:
        pytest.fail("SANDBOX_SNOWFLAKE_URL is not set: start the sandbox (python -m sandbox.services start)")
    seed_001(url)
    monkeypatch.setenv("DEMO_SNOWFLAKE_PASSWORD", "sandbox-password")
    # what the worker does runs in this process, whose test transaction must keep its connection open
    monkeypatch.setattr("controlplane.actions.runner.close_old_connections", lambda: None)
    with change_context(channel=Channel.SYSTEM, actor_name="test"):
        seed_snowflake(SeedReport(), url=url, password_ref="env:DEMO_SNOWFLAKE_PASSWORD")
        services.runbooks_load(parsed=[parse_file(LIBRARY / f"{name}.yaml") for name in RUNBOOKS_001])


def _watch_incident(target: str, alert_type: str) -> Incident:
    """The incident the connectors' watch opened for ``target`` (one pass of the beat task)."""
    reports = connections_watch()
    assert [bool(r.error) for r in reports if r.connection == "snowflake-dev"] == [False], reports
    incident = Incident.objects.filter(alert_type=alert_type, targets__key=target).first()
    assert incident is not None, list(Incident.objects.values_list("alert_type", "title"))
    return incident


def _raw_inventory_rows() -> int:
    connector = connector_for(Connection.objects.get(name="snowflake-dev"))
    assert isinstance(connector, SnowflakeConnector)
    with connector.session("counting test rows", tag="test") as conn:
        return int(scalar(conn, "SELECT COUNT(*) FROM DEV_RAW.BRONZE.RAW_INVENTORY"))


def _warehouse_size() -> str:
    connector = connector_for(Connection.objects.get(name="snowflake-dev"))
    assert isinstance(connector, SnowflakeConnector)
    with connector.session("reading the test's warehouse", tag="test") as conn:
        return str(connector.warehouse(conn, "WH_TRANS")["size"]).upper().replace("-", "")


def _act(actor: Any, run: RunbookRun, step_id: str, capture: Any) -> ActionRun:
    """Press Run on the action step, then do what the worker does; the step ends with the action."""
    action = as_user(actor, services.step_act, run_id=run.pk, step_id=step_id)
    with capture(execute=True):
        action_execute(action_id=str(action.id))
    action.refresh_from_db()
    return action


def test_task_suspended_runbook_from_the_watch_incident_to_the_verified_resume(
    seeded: None, actors: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    rita = actors["responder"]
    incident = _watch_incident(ROOT, "snowflake.task_failed")
    assert incident.details["details"]["state"] == "FAILED_AND_AUTO_SUSPENDED"
    assert FAILURE in incident.details["details"]["error"]
    suggested = [v.runbook.slug for v in runbooks_for_incident(incident)]
    assert suggested[0] == "001-transformation-task-failure", suggested

    run = as_user(rita, services.run_start, runbook="001-transformation-task-failure", params={}, incident=incident)
    assert run.params["task"] == ROOT and not run.params["dag"]  # from the incident; no Airflow DAG
    services.run_advance(run_id=run.pk)
    rows = step_rows(run)
    assert rows["airflow_failure"].state == "skipped"
    history = rows["task_history"]
    assert history.state == "done", history.error
    assert history.result["check"] == "task_history" and history.result["passed"] is False
    assert FAILURE in history.result["summary"]
    state = rows["task_state"]
    assert state.state == "done" and state.result["passed"] is False, (state.error, state.result)
    assert rows["diagnose"].state == "waiting"

    as_user(rita, services.step_complete, run_id=run.pk, step_id="diagnose", choice="task suspended")
    services.run_advance(run_id=run.pk)
    assert step_rows(run)["resume_task"].state == "waiting"  # an action waits for a person to run it
    action = _act(rita, run, "resume_task", django_capture_on_commit_callbacks)
    assert action.state == "succeeded", (action.error, action.verification)
    plan, verification = action.plan or {}, action.verification or {}
    assert plan["details"]["mode"] == "retry_last"  # the failed, unchanged graph run is retried
    assert verification["ok"] is True
    assert verification["details"]["run_states"]  # the retried run's tasks, all succeeded
    assert set(verification["details"]["run_states"].values()) == {"SUCCEEDED"}

    services.run_advance(run_id=run.pk)
    rows = step_rows(run)
    assert rows["resume_task"].state == "done" and rows["resume_task"].result["passed"] is True
    assert rows["execute_task"].state == "skipped"  # the resume already ran the failed tasks again
    after = rows["task_after"]
    assert after.state == "done", after.error
    assert after.result["passed"] is True, after.result["summary"]  # the newest run succeeded
    assert rows["outcome"].state == "waiting"
    as_user(rita, services.step_complete, run_id=run.pk, step_id="outcome", choice="recovered")
    services.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.state == "completed"
    connections_watch()  # the graph is healthy again: the watch finds nothing new on it
    assert Incident.objects.filter(alert_type="snowflake.task_failed", targets__key=ROOT).count() == 1


def test_the_watch_opens_an_incident_for_the_paused_pipe_suggesting_the_snowpipe_runbook(seeded: None) -> None:
    incident = _watch_incident(PAUSED_PIPE, "snowflake.pipe_paused")
    assert incident.details["details"]["execution_state"] == "PAUSED"
    suggested = [v.runbook.slug for v in runbooks_for_incident(incident)]
    assert suggested[0] == "001-snowpipe-failure", suggested
    run_defaults = services.run_defaults(
        version=RunbookVersion.objects.get(runbook__slug="001-snowpipe-failure", version=2),
        incident=incident,
    )
    assert run_defaults["pipe"] == PAUSED_PIPE


def test_snowpipe_runbook_resumes_the_paused_pipe_and_loads_the_waiting_file(
    seeded: None, actors: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    rita = actors["responder"]
    assert _raw_inventory_rows() == 0
    run = as_user(
        rita,
        services.run_start,
        runbook="001-snowpipe-failure",
        params={"pipe": PAUSED_PIPE, "raw_table": "dev.snowflake.raw_inventory"},
    )
    services.run_advance(run_id=run.pk)
    checklist = ["No new data in the raw table", "Pipe status shows errors"]
    as_user(rita, services.step_complete, run_id=run.pk, step_id="symptoms", checked=checklist)
    services.run_advance(run_id=run.pk)
    rows = step_rows(run)
    status = rows["pipe_status"]
    assert status.state == "done" and status.result["passed"] is False, (status.error, status.result)
    assert "PAUSED" in status.result["summary"]
    assert rows["usage_history"].state == "done", rows["usage_history"].error

    as_user(rita, services.step_complete, run_id=run.pk, step_id="diagnose", choice="pipe paused")
    services.run_advance(run_id=run.pk)
    action = _act(rita, run, "resume_pipe", django_capture_on_commit_callbacks)
    assert action.state == "succeeded", (action.error, action.verification)
    assert _raw_inventory_rows() == 15  # the file that waited while the pipe was paused is loaded

    services.run_advance(run_id=run.pk)
    rows = step_rows(run)
    assert rows["resume_pipe"].state == "done"
    after = rows["pipe_after"]
    assert after.state == "done" and after.result["passed"] is True, (after.error, after.result)
    loads = rows["loads_after"]
    assert loads.state == "done", loads.error
    assert "inventory_2024-01-05.csv" in str(loads.result["rows"])


def test_pipeline_status_runbook_reads_tasks_stream_and_pipe(seeded: None, actors: dict[str, Any]) -> None:
    rita = actors["responder"]
    params = {"task": ROOT, "stream": "dev.snowflake.stream_pos_changes", "pipe": "dev.snowflake.pipe_pos_data"}
    run = as_user(rita, services.run_start, runbook="001-pipeline-status", params=params)
    services.run_advance(run_id=run.pk)
    rows = step_rows(run)
    results = {s: rows[s].result for s in ("tasks", "task_runs", "stream", "pipe")}
    assert {s: rows[s].state for s in results} == dict.fromkeys(results, "done"), {s: rows[s].error for s in results}
    assert results["tasks"]["passed"] is False and "FAILED_AND_AUTO_SUSPENDED" in results["tasks"]["summary"]
    assert results["task_runs"]["passed"] is False and FAILURE in results["task_runs"]["summary"]
    assert results["stream"]["check"] == "stream_has_data"  # the 5th's rows wait in the stream
    assert results["pipe"]["passed"] is True  # the POS pipe runs
    assert rows["dag_runs"].state == "skipped" and rows["assess"].state == "waiting"


def test_scale_warehouse_runbook_scales_up_after_a_sign_off_and_back_down(
    seeded: None, actors: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    rita, alice = actors["responder"], actors["approver"]
    run = as_user(
        rita, services.run_start, runbook="001-scale-warehouse", params={"warehouse": "dev.snowflake.wh_trans"}
    )
    services.run_advance(run_id=run.pk)
    status = step_rows(run)["status"]
    assert status.state == "done" and "MEDIUM" in str(status.result["rows"]).upper(), (status.error, status.result)
    requested = as_user(rita, services.step_act, run_id=run.pk, step_id="scale_up")
    assert requested.state == "awaiting_approval"  # the sign-off: on the plan, by a second person
    assert requested.approval_reason == "runbook 001-scale-warehouse step scale_up asks for one"
    as_user(alice, action_approve, action_id=requested.id, comment="backfill tonight")
    up = _act(rita, run, "scale_up", django_capture_on_commit_callbacks)
    assert up.state == "succeeded", (up.error, up.verification)
    assert _warehouse_size() == "LARGE"
    services.run_advance(run_id=run.pk)
    as_user(rita, services.step_complete, run_id=run.pk, step_id="workload", checked=["Workload completed"])
    services.run_advance(run_id=run.pk)
    down = _act(rita, run, "scale_down", django_capture_on_commit_callbacks)
    assert down.state == "succeeded", (down.error, down.verification)
    services.run_advance(run_id=run.pk)
    after = step_rows(run)["status_after"]
    assert after.state == "done" and after.result["passed"] is True, (after.error, after.result)
    assert _warehouse_size() == "MEDIUM"
    run.refresh_from_db()
    assert run.state == "completed"

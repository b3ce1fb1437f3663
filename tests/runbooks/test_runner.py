"""The runner: a run follows one runbook version step by step, checks run themselves against the real
warehouse, action steps go through the action path once per attempt and finish when verified, people
complete manual steps and approve gates, and the state lives in the database (restarts lose nothing)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from controlplane.actions.models import ActionRun
from controlplane.actions.runner import action_execute
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.errors import Conflict, Forbidden, InvalidInput
from controlplane.incidents.models import Incident, IncidentEvent
from runbooks import services
from runbooks.loader import LIBRARY, parse_file, parse_text
from runbooks.models import RunbookRun, StepRun
from tests.conftest import wait_for

DEV_MART = "dev.weather.daily_weather_aggregates"
PROD_MART = "prod.weather.daily_weather_aggregates"

GATED = """\
id: 000-gated
title: Gated
version: 1
parameters:
  - {name: mart, type: target, target_kinds: [matview]}
steps:
  - id: look
    kind: check
    title: Look
    target: "{{ params.mart }}"
    check: matview_status
  - id: sign_off
    kind: approval
    title: A lead signs off
  - id: by_hand
    kind: manual
    title: By hand
    checklist: [one, two]
    choices: [fine, not fine]
  - id: later
    kind: manual
    title: Only when not fine
    when: "steps.by_hand.choice == 'not fine'"
  - id: bad_template
    kind: notify
    title: Tell
    message: "{{ steps.look.nothing_like_this }}"
"""


@pytest.fixture
def library(db: Any) -> None:
    with change_context(channel=Channel.SYSTEM, actor_name="test"):
        files = [parse_file(LIBRARY / "004-rehydrate-mart.yaml"), parse_text(GATED, "000-gated.yaml")]
        services.runbooks_load(parsed=files)


def start(actor: Any, runbook: str, incident: Incident | None = None, **params: Any) -> RunbookRun:
    with change_context(channel=Channel.WEB, user=actor):
        return services.run_start(actor=actor, runbook=runbook, params=params, incident=incident)


def steps(run: RunbookRun) -> dict[str, StepRun]:
    return {row.step_id: row for row in StepRun.objects.filter(run=run)}


def as_user(actor: Any, fn: Any, **kwargs: Any) -> Any:
    with change_context(channel=Channel.WEB, user=actor):
        return fn(actor=actor, **kwargs)


def test_rehydrate_runs_its_checks_and_finishes_when_the_refresh_is_verified(
    catalog: Any, actors: Any, library: Any, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    rita = actors["responder"]
    incident = Incident.objects.create(title="mart stale", severity="medium", fingerprint="f", alert_type="freshness")
    incident.targets.add(catalog["mart_dev"])
    run = start(rita, "004-rehydrate-mart", incident)
    assert run.params == {"mart": DEV_MART, "database": None}  # the default came from the incident
    services.run_advance(run_id=run.pk)
    rows = steps(run)
    assert rows["current_state"].state == "done"
    assert rows["current_state"].result["check"] == "matview_status" and rows["current_state"].result["columns"]
    assert rows["blocking"].state == "skipped"  # when: params.database, and there is none
    assert rows["refresh"].state == "waiting"
    run.refresh_from_db()
    assert run.state == "waiting" and run.current == 2

    action = as_user(rita, services.step_act, run_id=run.pk, step_id="refresh")
    again = as_user(rita, services.step_act, run_id=run.pk, step_id="refresh")
    assert again.id == action.id and ActionRun.objects.count() == 1  # a double click launches nothing more
    assert action.channel == "runbook" and action.incident_id == incident.pk
    assert action.params["concurrently"] is True

    # What the worker does, in this process (whose test transaction must keep its connection open).
    monkeypatch.setattr("controlplane.actions.runner.close_old_connections", lambda: None)
    with django_capture_on_commit_callbacks(execute=True):
        action_execute(action_id=str(action.id))
    rows = steps(run)
    assert rows["refresh"].state == "done"
    assert rows["refresh"].result["verification"]["ok"] is True

    services.run_advance(run_id=run.pk)
    assert steps(run)["after_refresh"].state == "done"
    with pytest.raises(InvalidInput, match="tick every item"):
        as_user(rita, services.step_complete, run_id=run.pk, step_id="last_days", choice="complete")
    checklist = ["Every day of the last 7 is present", "Each day has the expected number of locations"]
    with pytest.raises(InvalidInput, match="choose one of"):
        as_user(rita, services.step_complete, run_id=run.pk, step_id="last_days", checked=checklist, choice="maybe")
    as_user(rita, services.step_complete, run_id=run.pk, step_id="last_days", checked=checklist, choice="complete")
    services.run_advance(run_id=run.pk)
    as_user(rita, services.step_complete, run_id=run.pk, step_id="monitor")
    services.run_advance(run_id=run.pk)

    run.refresh_from_db()
    assert run.state == "completed" and run.finished_at is not None
    told = steps(run)["tell"].result["message"]
    assert told.startswith(f"{DEV_MART} rehydrated: ")
    timeline = list(IncidentEvent.objects.filter(incident=incident).values_list("message", flat=True))
    assert any("started runbook 004-rehydrate-mart v1" in m for m in timeline)
    assert any("refresh-mart verified" in m for m in timeline)
    assert any(m.startswith("Tell the channel: ") for m in timeline)
    events = list(AuditEvent.objects.filter(object_type="runbooks.runbookrun").values_list("event", flat=True))
    assert events[0] == "runbook_run.started" and events[-1] == "runbook_run.completed"
    assert "runbook_step.action_verified" in events and "runbook_step.skipped" in events


def test_approval_gates_need_someone_else_and_when_skips(catalog: Any, actors: Any, library: Any) -> None:
    rita, alice = actors["responder"], actors["approver"]
    run = start(alice, "000-gated", mart=DEV_MART)
    services.run_advance(run_id=run.pk)
    assert steps(run)["sign_off"].state == "waiting"
    with pytest.raises(Forbidden, match="a different person must approve"):
        as_user(alice, services.step_approve, run_id=run.pk, step_id="sign_off")
    with pytest.raises(Forbidden, match="needs the approver role"):
        as_user(rita, services.step_approve, run_id=run.pk, step_id="sign_off")
    with pytest.raises(Conflict, match="not completed by hand"):
        as_user(rita, services.step_complete, run_id=run.pk, step_id="sign_off")
    with pytest.raises(Conflict, match="cannot be skipped"):
        as_user(rita, services.step_skip, run_id=run.pk, step_id="sign_off", reason="in a hurry")
    as_user(actors["approver2"], services.step_approve, run_id=run.pk, step_id="sign_off", comment="ok")
    services.run_advance(run_id=run.pk)
    as_user(rita, services.step_complete, run_id=run.pk, step_id="by_hand", checked=["one", "two"], choice="fine")
    services.run_advance(run_id=run.pk)
    rows = steps(run)
    assert rows["later"].state == "skipped"
    # A template naming something the check does not have fails the step loudly; the run is blocked.
    assert rows["bad_template"].state == "failed"
    assert "nothing_like_this" in rows["bad_template"].error
    run.refresh_from_db()
    assert run.state == "blocked"
    as_user(rita, services.step_skip, run_id=run.pk, step_id="bad_template", reason="message broken")
    services.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.state == "completed"


def test_starting_checks_roles_and_parameters(catalog: Any, actors: Any, library: Any) -> None:
    with pytest.raises(Forbidden):
        start(actors["viewer"], "004-rehydrate-mart", mart=DEV_MART)
    with pytest.raises(InvalidInput, match="'mart' is required"):
        start(actors["responder"], "004-rehydrate-mart")
    with pytest.raises(InvalidInput, match="is a table, not a matview"):
        start(actors["responder"], "004-rehydrate-mart", mart="dev.weather.core_weather")
    with pytest.raises(InvalidInput, match="no catalog target"):
        start(actors["responder"], "004-rehydrate-mart", mart="dev.nope'; drop table x")
    with pytest.raises(InvalidInput, match="unknown parameters"):
        start(actors["responder"], "004-rehydrate-mart", mart=DEV_MART, surprise=1)
    assert RunbookRun.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_two_clicks_at_once_launch_one_action(catalog: Any, actors: Any, library: Any) -> None:
    rita = actors["responder"]
    run = start(rita, "004-rehydrate-mart", mart=DEV_MART)
    services.run_advance(run_id=run.pk)
    ids: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def click() -> None:
        try:
            barrier.wait()
            ids.append(str(as_user(rita, services.step_act, run_id=run.pk, step_id="refresh").id))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=click) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(ids)) == 1 and ActionRun.objects.count() == 1


@pytest.mark.worker
def test_a_run_survives_a_worker_restart(catalog: Any, actors: Any, library: Any, worker_factory: Any) -> None:
    """No worker when the run starts: the advance waits in the broker; the first worker advances it to the
    action step and is stopped; a second worker executes the action, and the step completes."""
    rita = actors["responder"]
    run = start(rita, "004-rehydrate-mart", mart=DEV_MART)  # on_commit: advance_run is in the broker now
    assert steps(run)["current_state"].state == "pending"
    first = worker_factory()
    wait_for(lambda: steps(run)["refresh"].state == "waiting", timeout=60, what="the run to reach the refresh")
    first.stop()
    as_user(rita, services.step_act, run_id=run.pk, step_id="refresh")
    worker_factory()
    wait_for(lambda: steps(run)["after_refresh"].state == "done", timeout=90, what="the refresh and the next check")
    rows = steps(run)
    assert rows["refresh"].state == "done" and rows["refresh"].action is not None
    assert rows["refresh"].action.state == "succeeded"

    def stopped() -> bool:  # each step's move commits on its own: "running" while the worker goes on
        run.refresh_from_db()
        return run.state != "running"

    wait_for(stopped, timeout=30, what="the run to stop at the next step for a person")
    assert run.state == "waiting" and run.current == 4  # at the manual check of the last 7 days


def test_an_action_end_nobody_announced_is_picked_up_by_the_sweep(
    catalog: Any, actors: Any, library: Any, monkeypatch: Any
) -> None:
    """The worker died between the action's commit and its announcement: the step would wait forever.
    The stalled-run sweep (beat) finds the ended action and completes the step."""
    from django.utils import timezone

    rita = actors["responder"]
    run = start(rita, "004-rehydrate-mart", mart=DEV_MART)
    services.run_advance(run_id=run.pk)
    action = as_user(rita, services.step_act, run_id=run.pk, step_id="refresh")
    monkeypatch.setattr("controlplane.actions.runner.close_old_connections", lambda: None)
    monkeypatch.setattr("controlplane.actions.services.announce_finished_on_commit", lambda action: None)
    monkeypatch.setattr("controlplane.actions.runner.announce_finished_on_commit", lambda action: None)
    action_execute(action_id=str(action.id))  # succeeds, and nobody is told
    assert ActionRun.objects.get(id=action.id).state == "succeeded"
    assert steps(run)["refresh"].state == "waiting"
    advanced: list[int] = []
    monkeypatch.setattr("runbooks.tasks.advance_run.delay", advanced.append)
    assert services.runs_resume_stalled(now=timezone.now()) == [run.pk]
    services.run_advance(run_id=advanced[0])  # what the enqueued task does
    assert steps(run)["refresh"].state == "done"
    assert steps(run)["after_refresh"].state == "done"

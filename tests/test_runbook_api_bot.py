"""A bot walks a runbook through the API alone: it finds the suggested runbook on the incident, starts it,
reads what each step needs next (``next``), drives the steps, waits on the run (``?wait=``) and on its
action, and lists runs by incident, state and runbook."""

from __future__ import annotations

import time
from typing import Any

import pytest

from controlplane.actions.models import ActionRun
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.incidents.models import IncidentEvent
from runbooks import services
from runbooks.loader import LIBRARY, parse_file, parse_text
from runbooks.models import RunbookRun, StepRun

MART = "dev.weather.daily_weather_aggregates"
ALERT = {
    "source": "grafana",
    "target": MART,
    "severity": "medium",
    "summary": "mart is stale",
    "alert_type": "freshness",
}
GATED = """\
id: 000-gated
title: Gated
version: 1
steps:
  - id: sign_off
    kind: approval
    title: A lead signs off
  - id: by_hand
    kind: manual
    title: By hand
    checklist: [one, two]
    choices: [fine, not fine]
"""


@pytest.fixture
def library(db: Any) -> None:
    with change_context(channel=Channel.SYSTEM, actor_name="test"):
        files = [parse_file(LIBRARY / "004-rehydrate-mart.yaml"), parse_text(GATED, "000-gated.yaml")]
        services.runbooks_load(parsed=files)


def _drive(bot: Any, run: dict[str, Any]) -> dict[str, Any]:
    """One move of the bot on what the run's current step needs (the way examples/chatops_bot.py moves)."""
    need = run["next"]
    base = f"/api/v1/runbook-runs/{run['id']}"
    if need["by"] == "action":
        bot.get(f"/api/v1/actions/{need['action']}", wait=30)
        return bot.get(base, wait=30).json()
    if need["by"] == "system":
        return bot.get(base, wait=30).json()
    assert need["by"] == "person", need
    command = need["commands"][0]
    body: dict[str, Any] = {}
    if command == "complete":
        body = {"checked": need["checklist"], "choice": need["choices"][0] if need["choices"] else ""}
    answer = bot.post(f"{base}/steps/{need['step']}/{command}", body)
    assert answer.status_code == 200, answer.content
    return bot.get(base, wait=30).json()


@pytest.mark.django_db(transaction=True)
def test_a_bot_walks_the_suggested_runbook_to_the_end_through_the_api_alone(
    catalog: Any, actors: Any, api_for: Any, library: Any, worker_factory: Any
) -> None:
    worker_factory()
    bot = api_for("responder")
    incident = bot.post("/api/v1/alerts", ALERT).json()
    detail = bot.get(f"/api/v1/incidents/{incident['id']}").json()
    assert detail["suggested_runbooks"][0] == {
        "id": "004-rehydrate-mart",
        "title": "Rehydrate a mart by refreshing materialized views",
        "version": 1,
    }
    started = bot.post("/api/v1/runbook-runs", {"runbook": "004-rehydrate-mart", "incident": incident["id"]})
    assert started.status_code == 201, started.content
    run = started.json()
    assert run["params"]["mart"] == MART  # the default came from the incident's target
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + 120
    while run["state"] != "completed":
        assert time.monotonic() < deadline, run
        assert run["state"] != "blocked", run
        need = run["next"]
        seen.append((need["step"], need["by"]))
        if need["step"] == "refresh" and need["by"] == "person":
            assert need["commands"] == ["act", "skip"]
            assert need["act"] == {
                "verb": "refresh-mart",
                "target": MART,
                "params": {"concurrently": True},
                "approval": "policy",
            }
        if need["step"] == "last_days":
            assert need["checklist"] and need["choices"] == ["complete", "days missing"]
            assert "freshness query" in need["instructions"]
        run = _drive(bot, run)
    assert run["next"] is None and run["finished_at"] is not None
    assert ("refresh", "person") in seen and ("last_days", "person") in seen and ("monitor", "person") in seen
    assert {s["id"]: s["state"] for s in run["steps"]} == {
        "current_state": "done",
        "blocking": "skipped",
        "refresh": "done",
        "after_refresh": "done",
        "last_days": "done",
        "monitor": "done",
        "tell": "done",
    }
    action = ActionRun.objects.get()
    assert action.state == "succeeded" and action.incident_id == incident["id"] and action.channel == "runbook"
    events = set(AuditEvent.objects.values_list("event", flat=True))
    assert {"incident.opened", "runbook_run.started", "action.requested", "runbook_run.completed"} <= events
    timeline = list(IncidentEvent.objects.filter(incident_id=incident["id"]).values_list("message", flat=True))
    assert any("refresh-mart verified" in m for m in timeline)


@pytest.mark.django_db
def test_next_names_the_gate_and_the_checklist_and_the_run_can_be_abandoned(
    catalog: Any, actors: Any, api_for: Any, library: Any
) -> None:
    starter = api_for("approver")
    run = starter.post("/api/v1/runbook-runs", {"runbook": "000-gated"}).json()
    run = starter.get(f"/api/v1/runbook-runs/{run['id']}").json()
    services.run_advance(run_id=run["id"])  # what the worker does after the start
    run = starter.get(f"/api/v1/runbook-runs/{run['id']}").json()
    assert run["next"] | {"instructions": ""} == {
        "step": "sign_off",
        "kind": "approval",
        "title": "A lead signs off",
        "state": "waiting",
        "by": "person",
        "commands": ["approve"],
        "role": "approver",
        "instructions": "",
    }
    passed = api_for("approver2").post(f"/api/v1/runbook-runs/{run['id']}/steps/sign_off/approve", {})
    assert passed.status_code == 200
    # The answer already shows the next step (the API advances the run as the page does).
    assert passed.json()["next"]["step"] == "by_hand"
    assert passed.json()["next"]["checklist"] == ["one", "two"]
    assert passed.json()["steps"][1]["title"] == "By hand"

    refused = starter.post(f"/api/v1/runbook-runs/{run['id']}/abandon", {})
    assert refused.status_code == 400 and "reason" in refused.json()["error"]["message"]
    assert api_for("viewer").post(f"/api/v1/runbook-runs/{run['id']}/abandon", {"reason": "x"}).status_code == 403
    done = starter.post(f"/api/v1/runbook-runs/{run['id']}/abandon", {"reason": "handled by hand"})
    assert done.status_code == 200 and done.json()["state"] == "abandoned" and done.json()["next"] is None
    assert AuditEvent.objects.filter(event="runbook_run.abandoned", reason="handled by hand").count() == 1
    again = starter.post(f"/api/v1/runbook-runs/{run['id']}/abandon", {"reason": "twice"})
    assert again.status_code == 409


@pytest.mark.django_db
def test_runs_are_listed_by_incident_state_and_runbook(catalog: Any, actors: Any, api_for: Any, library: Any) -> None:
    bot = api_for("responder")
    incident = bot.post("/api/v1/alerts", ALERT).json()["id"]
    a = bot.post("/api/v1/runbook-runs", {"runbook": "004-rehydrate-mart", "incident": incident}).json()["id"]
    b = bot.post("/api/v1/runbook-runs", {"runbook": "000-gated"}).json()["id"]
    services.run_advance(run_id=b)
    bot.post(f"/api/v1/runbook-runs/{b}/abandon", {"reason": "test"})
    reader = api_for("viewer", scopes=["runbooks:read"])
    everything = reader.get("/api/v1/runbook-runs").json()["results"]
    assert [r["id"] for r in everything] == [b, a]
    assert everything[1]["current_step"] == "current_state" and everything[1]["incident"] == incident
    assert everything[0]["current_step"] == "sign_off" and everything[0]["started_by"] == "rita"
    assert [r["id"] for r in reader.get("/api/v1/runbook-runs", incident=incident).json()["results"]] == [a]
    assert [r["id"] for r in reader.get("/api/v1/runbook-runs", state="abandoned").json()["results"]] == [b]
    assert [r["id"] for r in reader.get("/api/v1/runbook-runs", runbook="000-gated").json()["results"]] == [b]
    bad = reader.get("/api/v1/runbook-runs", state="finished")
    assert bad.status_code == 400 and "state" in bad.json()["error"]["message"]
    assert reader.get("/api/v1/runbook-runs", colour="red").status_code == 400
    assert api_for("responder", scopes=["incidents:read"]).get("/api/v1/runbook-runs").status_code == 403


@pytest.mark.django_db
def test_waiting_on_a_run_that_needs_a_person_answers_at_once(
    catalog: Any, actors: Any, api_for: Any, library: Any
) -> None:
    bot = api_for("approver")
    run = bot.post("/api/v1/runbook-runs", {"runbook": "000-gated"}).json()
    services.run_advance(run_id=run["id"])
    began = time.monotonic()
    answer = bot.get(f"/api/v1/runbook-runs/{run['id']}", wait=20)
    assert answer.status_code == 200 and answer.json()["next"]["by"] == "person"
    assert time.monotonic() - began < 5
    # Busy (a check the worker has not run): the wait lasts until its end.
    busy = bot.post("/api/v1/runbook-runs", {"runbook": "004-rehydrate-mart", "params": {"mart": MART}}).json()
    began = time.monotonic()
    answer = bot.get(f"/api/v1/runbook-runs/{busy['id']}", wait=1)
    assert time.monotonic() - began >= 0.9 and answer.json()["next"]["by"] == "system"
    assert bot.get(f"/api/v1/runbook-runs/{run['id']}", wait=31).status_code == 400


@pytest.mark.django_db
def test_a_failed_action_step_retried_waits_for_a_new_action(
    catalog: Any, actors: Any, api_for: Any, library: Any
) -> None:
    bot = api_for("responder")
    run = bot.post("/api/v1/runbook-runs", {"runbook": "004-rehydrate-mart", "params": {"mart": MART}}).json()
    services.run_advance(run_id=run["id"])  # the checks, as the worker runs them
    first = bot.post(f"/api/v1/runbook-runs/{run['id']}/steps/refresh/act", {}).json()
    first_action = first["next"]["action"]
    ActionRun.objects.filter(pk=first_action).update(state="failed", error="the view was locked")
    services.step_action_finished(action_id=first_action)
    failed = bot.get(f"/api/v1/runbook-runs/{run['id']}").json()
    assert failed["state"] == "blocked"
    assert failed["next"]["commands"] == ["retry", "skip"] and "the view was locked" in failed["next"]["error"]

    retried = bot.post(f"/api/v1/runbook-runs/{run['id']}/steps/refresh/retry", {}).json()
    services.run_advance(run_id=run["id"])  # what the worker does on commit: the step must stay waiting
    after = bot.get(f"/api/v1/runbook-runs/{run['id']}").json()
    assert retried["next"]["commands"] == ["act", "skip"] and after["next"]["commands"] == ["act", "skip"]
    assert StepRun.objects.get(run_id=run["id"], step_id="refresh").state == "waiting"
    second = bot.post(f"/api/v1/runbook-runs/{run['id']}/steps/refresh/act", {}).json()
    assert second["next"]["action"] != first_action and second["next"]["by"] == "action"
    assert RunbookRun.objects.get(pk=run["id"]).state == "waiting"


WAITS = """\
id: 000-waits
title: Waits on an action
version: 1
steps:
  - id: refresh
    kind: action
    title: Refresh the mart
    target: dev.weather.daily_weather_aggregates
    verb: refresh-mart
  - id: after
    kind: manual
    title: After
"""


@pytest.mark.django_db(transaction=True)
def test_a_run_wait_is_woken_by_the_runs_change_not_by_its_recheck(
    catalog: Any, actors: Any, api_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from django.db import connection

    from controlplane.api import waiting

    monkeypatch.setattr(waiting, "_RECHECK_SECONDS", 20.0)  # only the announced change can wake it early
    with change_context(channel=Channel.SYSTEM, actor_name="test"):
        services.runbooks_load(parsed=[parse_text(WAITS, "000-waits.yaml")])
    bot = api_for("responder")
    run = bot.post("/api/v1/runbook-runs", {"runbook": "000-waits", "params": {}}).json()
    base = f"/api/v1/runbook-runs/{run['id']}"
    services.run_advance(run_id=run["id"])  # what the worker does on start (none runs here)
    acted = bot.post(f"{base}/steps/refresh/act", {})
    assert acted.status_code == 200, acted.content
    busy = bot.get(base).json()
    assert busy["next"]["by"] == "action"  # queued, no worker: the system carries the run
    action_id = busy["next"]["action"]

    def cancel() -> None:
        time.sleep(0.5)
        try:
            bot.post(f"/api/v1/actions/{action_id}/cancel", {"reason": "not now"})
        finally:
            connection.close()

    thread = threading.Thread(target=cancel)
    started = time.monotonic()
    thread.start()
    answer = bot.get(base, wait="20").json()
    waited = time.monotonic() - started
    thread.join()
    assert ActionRun.objects.get(id=action_id).state == "cancelled"
    assert answer["next"]["by"] == "person", answer["next"]  # the step waits for someone to decide
    assert waited < 10, f"woken by the {waited:.1f}-second recheck, not by the run's change"

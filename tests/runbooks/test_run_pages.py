"""The guided run page and the runbook API: the same services, driven from a browser form or a bot."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from controlplane.audit.context import Channel, change_context
from controlplane.incidents.models import Incident
from runbooks import services
from runbooks.loader import LIBRARY, parse_file
from runbooks.models import RunbookRun, StepRun

DEV_MART = "dev.weather.daily_weather_aggregates"

pytestmark = pytest.mark.django_db


@pytest.fixture
def library(db: Any) -> None:
    with change_context(channel=Channel.SYSTEM, actor_name="test"):
        services.runbooks_load(parsed=[parse_file(LIBRARY / "004-rehydrate-mart.yaml")])


def browser(user: Any) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(user)
    return client


def test_start_form_is_prefilled_from_the_incident_and_starts_the_run(catalog: Any, actors: Any, library: Any) -> None:
    incident = Incident.objects.create(title="stale", severity="medium", fingerprint="x", alert_type="freshness")
    incident.targets.add(catalog["mart_dev"])
    rita = browser(actors["responder"])
    page = rita.get("/runs/new/", {"runbook": "004-rehydrate-mart", "incident": str(incident.pk)})
    assert page.status_code == 200
    assert f'<option value="{DEV_MART}" selected>' in page.content.decode()
    started = rita.post(
        "/runs/new/", {"runbook": "004-rehydrate-mart", "incident": incident.pk, "param-mart": DEV_MART}
    )
    run = RunbookRun.objects.get()
    assert started.status_code == 302 and started["Location"] == f"/runs/{run.pk}/"
    assert run.incident_id == incident.pk and run.params["mart"] == DEV_MART
    refused = browser(actors["viewer"]).post("/runs/new/", {"runbook": "004-rehydrate-mart", "param-mart": DEV_MART})
    assert refused.status_code == 403 and RunbookRun.objects.count() == 1


def test_run_page_shows_findings_the_action_form_and_previews_the_plan(catalog: Any, actors: Any, library: Any) -> None:
    with change_context(channel=Channel.WEB, user=actors["responder"]):
        run = services.run_start(actor=actors["responder"], runbook="004-rehydrate-mart", params={"mart": DEV_MART})
    services.run_advance(run_id=run.pk)
    rita = browser(actors["responder"])
    html = rita.get(f"/runs/{run.pk}/").content.decode()
    assert "Check the current state of the mart view" in html and "badge pass" in html  # findings inline
    assert 'id="step-form-refresh"' in html and 'name="param-concurrently"' in html
    assert "REFRESH MATERIALIZED VIEW CONCURRENTLY mart.daily_weather_aggregates" in html  # the seed's SQL
    preview = rita.post(
        f"/runs/{run.pk}/steps/refresh/preview/", {"param-concurrently": "true"}, headers={"HX-Request": "true"}
    )
    assert preview.status_code == 200
    assert "Preview" in preview.content.decode() and "daily_weather_aggregates" in preview.content.decode()
    assert StepRun.objects.get(run=run, step_id="refresh").action is None  # a preview changes nothing
    acted = rita.post(
        f"/runs/{run.pk}/steps/refresh/act/", {"param-concurrently": "true"}, headers={"HX-Request": "true"}
    )
    assert acted.status_code == 200
    step = StepRun.objects.select_related("action").get(run=run, step_id="refresh")
    assert step.action is not None and step.action.state == "queued"
    assert f"/actions/{step.action.id}/" in acted.content.decode()


def test_a_refused_step_command_says_why_and_changes_nothing(catalog: Any, actors: Any, library: Any) -> None:
    with change_context(channel=Channel.WEB, user=actors["responder"]):
        run = services.run_start(actor=actors["responder"], runbook="004-rehydrate-mart", params={"mart": DEV_MART})
    services.run_advance(run_id=run.pk)
    resp = browser(actors["viewer"]).post(f"/runs/{run.pk}/steps/refresh/act/", {}, headers={"HX-Request": "true"})
    assert resp.status_code == 403
    assert "needs the responder role" in resp.content.decode()
    wrong = browser(actors["responder"]).post(f"/runs/{run.pk}/steps/last_days/complete/", {})
    assert wrong.status_code == 409 and "is not the current step" in wrong.content.decode()
    assert StepRun.objects.get(run=run, step_id="refresh").action is None


def test_bots_start_and_advance_runs_through_the_api(catalog: Any, actors: Any, library: Any, api_for: Any) -> None:
    bot = api_for("responder")
    listed = bot.get("/api/v1/runbooks").json()
    assert [r["id"] for r in listed] == ["004-rehydrate-mart"]
    created = bot.post("/api/v1/runbook-runs", {"runbook": "004-rehydrate-mart", "params": {"mart": DEV_MART}})
    assert created.status_code == 201, created.content
    run_id = created.json()["id"]
    services.run_advance(run_id=run_id)  # the worker's part
    data = bot.get(f"/api/v1/runbook-runs/{run_id}").json()
    assert data["current_step"] == "refresh" and data["state"] == "waiting"
    assert data["steps"][0]["result"]["check"] == "matview_status"
    acted = bot.post(f"/api/v1/runbook-runs/{run_id}/steps/refresh/act", {})
    assert acted.status_code == 200
    action_id = acted.json()["steps"][2]["action"]
    assert bot.get(f"/api/v1/actions/{action_id}").json()["channel"] == "runbook"
    bad = bot.post(f"/api/v1/runbook-runs/{run_id}/steps/refresh/launch", {})
    assert bad.status_code == 404 and "no step command" in bad.json()["error"]["message"]
    unknown = bot.post("/api/v1/runbook-runs", {"runbook": "nope", "params": {}})
    assert unknown.status_code == 404
    reader = api_for("viewer", scopes=["runbooks:read"])
    assert reader.post("/api/v1/runbook-runs", {"runbook": "004-rehydrate-mart"}).status_code == 403

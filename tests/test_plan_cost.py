"""Cost as a plan figure: the approval threshold on estimated cost (every environment), the preview page, the
API's plan and the audit row all carry the estimated bytes and dollars (the ``cptest`` plugin's plans give them)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from connectors.base import Plan, Risk
from controlplane.actions import services
from controlplane.actions.models import ActionRun, ActionState
from controlplane.actions.policy import approval_needed
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.catalog.models import Environment

LAB_JOB = "lab.jobs.load"


@pytest.mark.parametrize(
    ("cost", "required"),
    [(None, False), (0.0, False), (49.99, False), (50.0, True), (50.01, True), (1234.5, True)],
)
def test_a_plan_at_or_over_the_cost_threshold_needs_approval_in_an_unprotected_environment(
    settings: Any, cost: float | None, required: bool
) -> None:
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "APPROVAL_COST_USD": 50.0}
    dev = Environment(name="dev", protected=False)
    decision = approval_needed(environment=dev, plan=Plan(summary="backfill 30 partitions", estimated_cost_usd=cost))
    assert decision.required is required
    if required:
        assert decision.reason == f"the estimated cost ${cost:,.2f} is at or over the $50.00 approval threshold"
    else:
        assert decision.reason == ""


def test_the_cost_reason_joins_the_protected_environment_and_a_costly_read_still_needs_approval(
    settings: Any,
) -> None:
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "APPROVAL_COST_USD": 10.0}
    prod = Environment(name="prod", protected=True)
    costly = Plan(summary="scan", estimated_cost_usd=12.5, risk=Risk.LOW)
    assert approval_needed(environment=prod, plan=costly).reason == (
        "prod is a protected environment; the estimated cost $12.50 is at or over the $10.00 approval threshold"
    )
    # Reading spends money too: a review that scans $12.50 of data is not free because it changes nothing.
    reading = costly.model_copy(update={"read_only": True})
    decision = approval_needed(environment=Environment(name="dev", protected=False), plan=reading)
    assert decision.required and "$12.50" in decision.reason
    cheap_read = reading.model_copy(update={"estimated_cost_usd": 9.99})
    assert approval_needed(environment=prod, plan=cheap_read).required is False


def request_job(actor: Any, **params: Any) -> ActionRun:
    with change_context(channel=Channel.API, user=actor):
        return services.action_request(
            actor=actor, verb="rerun", target_key=LAB_JOB, params=params, reason="reload the day"
        ).action


def test_a_costly_request_waits_for_approval_outside_protected_environments(cptest: Any, actors: Any) -> None:
    cheap = request_job(actors["responder"], estimated_bytes=2 * 1024**4, estimated_cost_usd=12.5)
    assert cheap.state == ActionState.QUEUED and not cheap.requires_approval
    services.action_cancel(actor=actors["responder"], action_id=cheap.id)
    costly = request_job(actors["responder"], estimated_bytes=20 * 1024**4, estimated_cost_usd=125.0)
    assert costly.state == ActionState.AWAITING_APPROVAL
    assert costly.approval_reason == "the estimated cost $125.00 is at or over the $50.00 approval threshold"


def test_the_request_audit_keeps_the_estimated_bytes_and_cost(cptest: Any, actors: Any) -> None:
    action = request_job(actors["responder"], estimated_bytes=20 * 1024**4, estimated_cost_usd=125.0)
    planned = AuditEvent.objects.get(object_id=str(action.id), event="action.planned").after or {}
    assert planned["estimated_bytes"] == 20 * 1024**4
    assert planned["estimated_cost_usd"] == 125.0
    assert planned["approval_reason"].startswith("the estimated cost $125.00")


def _web(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/").status_code == 200
    return client


def test_the_preview_shows_estimated_bytes_and_cost(cptest: Any, actors: Any) -> None:
    client = _web(actors["responder"])
    response = client.post(
        f"/targets/{LAB_JOB}/verbs/rerun/preview/",
        {"param-estimated_bytes": str(3 * 1024**4), "param-estimated_cost_usd": "18.75"},
        headers={"X-CSRFToken": client.cookies["csrftoken"].value, "HX-Request": "true"},
    )
    page = response.content.decode()
    assert response.status_code == 200, page
    assert "3.0 TB" in page and "$18.75" in page
    assert ActionRun.objects.count() == 0


def test_the_action_page_shows_the_cost_it_was_approved_on(cptest: Any, actors: Any) -> None:
    action = request_job(actors["responder"], estimated_bytes=1536, estimated_cost_usd=1250.0)
    page = _web(actors["approver"]).get(f"/actions/{action.id}/").content.decode()
    assert "1.5 kB" in page and "$1,250.00" in page


def test_the_api_plan_carries_estimated_bytes_and_cost(cptest: Any, api_for: Any) -> None:
    api = api_for("responder")
    body = {"verb": "rerun", "target": LAB_JOB, "params": {"estimated_bytes": 4096, "estimated_cost_usd": 60.0}}
    preview = api.post("/api/v1/actions/preview", body)
    assert preview.status_code == 200, preview.content
    assert preview.json()["plan"]["estimated_bytes"] == 4096
    assert preview.json()["plan"]["estimated_cost_usd"] == 60.0
    created = api.post("/api/v1/actions", {**body, "reason": "reload"})
    assert created.status_code == 202, created.content
    data = created.json()
    assert data["state"] == "awaiting_approval"
    assert (data["plan"]["estimated_bytes"], data["plan"]["estimated_cost_usd"]) == (4096, 60.0)
    again = api.get(f"/api/v1/actions/{data['id']}").json()
    assert (again["plan"]["estimated_bytes"], again["plan"]["estimated_cost_usd"]) == (4096, 60.0)


def test_an_action_planned_before_costs_existed_shows_them_as_null(cptest: Any, actors: Any, api_for: Any) -> None:
    action = request_job(actors["responder"])
    stored = {k: v for k, v in action.plan.items() if k not in ("estimated_bytes", "estimated_cost_usd")}
    ActionRun.objects.filter(id=action.id).update(plan=stored)
    plan = api_for("viewer").get(f"/api/v1/actions/{action.id}").json()["plan"]
    assert plan["estimated_bytes"] is None and plan["estimated_cost_usd"] is None
    assert plan["summary"] == "rerun job load"


def test_the_openapi_schema_describes_the_plan_figures(db: Any) -> None:
    schema = json.loads(Client().get("/api/schema/", headers={"Accept": "application/json"}).content)
    plan = schema["components"]["schemas"]["Plan"]
    assert {"estimated_bytes", "estimated_cost_usd", "summary", "risk"} <= set(plan["properties"])
    assert plan["properties"]["estimated_cost_usd"]["nullable"] is True
    detail = schema["components"]["schemas"]["ActionDetail"]["properties"]["plan"]
    preview = schema["components"]["schemas"]["ActionPreviewResult"]["properties"]["plan"]
    assert "Plan" in json.dumps(detail) and "Plan" in json.dumps(preview)


def test_slack_shows_the_cost_in_the_approval_request_and_the_runbook_preview(cptest: Any, actors: Any) -> None:
    from controlplane.slack import blocks

    action = request_job(actors["responder"], estimated_bytes=20 * 1024**4, estimated_cost_usd=125.0)
    _, message = blocks.approval_request(action, "rita")
    head = message[0]["text"]["text"]
    assert "*Cost:* reads 20.0 TB, estimated $125.00\n*Needs approval:* the estimated cost $125.00" in head
    plan = Plan(summary="backfill 3 partitions", estimated_bytes=1536, estimated_cost_usd=0.004)
    preview = blocks.preview_blocks(preview_id=1, verb="backfill", target=LAB_JOB, plan=plan, approval="")
    assert "Cost: reads 1.5 kB, estimated < $0.01" in preview[0]["text"]["text"]
    free = blocks.preview_blocks(preview_id=2, verb="backfill", target=LAB_JOB, plan=Plan(summary="x"), approval="")
    assert "Cost:" not in free[0]["text"]["text"]  # a plan without figures says nothing of cost


def test_every_rule_at_once_gives_a_reason_that_fits_the_action_row(db: Any) -> None:
    prod = Environment.objects.create(name="prod-like-with-a-long-name", protected=True)
    plan = Plan(summary="backfill", risk=Risk.HIGH, estimated_cost_usd=123456.78)
    asked = "runbook 003-quarantine-weekly-review-with-a-long-name step cleanup_prod_of_every_source"
    decision = approval_needed(environment=prod, plan=plan, asked_by=asked)
    assert decision.required and len(decision.reason) == 200 and decision.reason.endswith("…")
    assert decision.reason.startswith(f"{asked} asks for one; prod-like-with-a-long-name is a protected environment")

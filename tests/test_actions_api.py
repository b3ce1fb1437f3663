"""Requesting, approving and cancelling actions through the REST API: policy, idempotency, conflicts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.actions.models import ActionRun, ActionState, Approval
from controlplane.audit.models import AuditEvent

pytestmark = pytest.mark.django_db

DEV_MART = "dev.weather.daily_weather_aggregates"
PROD_MART = "prod.weather.daily_weather_aggregates"


def body(target: str = DEV_MART, **over: Any) -> dict[str, Any]:
    return {"verb": "refresh-mart", "target": target, "params": {}, "reason": "mart is stale after backfill"} | over


def audit_events(action_id: str) -> list[str]:
    return list(AuditEvent.objects.filter(object_id=action_id).order_by("seq").values_list("event", flat=True))


def test_request_in_dev_is_queued_with_its_plan_and_audited(catalog: Any, api_for: Any) -> None:
    resp = api_for("responder").post("/api/v1/actions", body())
    assert resp.status_code == 202, resp.content
    data = resp.json()
    assert data["state"] == "queued"
    assert data["plan"]["details"] or data["plan"]["summary"]
    assert "daily_weather_aggregates" in json.dumps(data["plan"])
    assert data["requested_by"] == "rita"
    assert audit_events(data["id"]) == ["action.requested", "action.planned"]
    event = AuditEvent.objects.get(object_id=data["id"], event="action.requested")
    assert event.channel == "api" and event.actor_name == "rita" and event.reason == body()["reason"]
    assert resp["X-Request-ID"] == event.request_id


def test_same_idempotency_key_and_body_returns_the_same_action(catalog: Any, api_for: Any) -> None:
    bot = api_for("responder")
    first = bot.post("/api/v1/actions", body(), headers={"Idempotency-Key": "k-1"})
    second = bot.post("/api/v1/actions", body(), headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert ActionRun.objects.count() == 1


def test_same_idempotency_key_with_another_body_is_422(catalog: Any, api_for: Any) -> None:
    bot = api_for("responder")
    first = bot.post("/api/v1/actions", body(), headers={"Idempotency-Key": "k-2"})
    other = bot.post("/api/v1/actions", body(reason="a different reason"), headers={"Idempotency-Key": "k-2"})
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert first.json()["id"] in other.json()["error"]["message"]
    assert ActionRun.objects.count() == 1


def test_idempotency_keys_belong_to_their_requester(catalog: Any, api_for: Any) -> None:
    first = api_for("responder").post("/api/v1/actions", body(), headers={"Idempotency-Key": "shared"})
    other = api_for("responder2").post("/api/v1/actions", body(), headers={"Idempotency-Key": "shared"})
    assert first.status_code == 202
    assert other.status_code == 409  # not rita's action handed to rob: his own request conflicts instead


def test_second_active_action_on_a_target_is_409_naming_the_first(catalog: Any, api_for: Any) -> None:
    first = api_for("responder").post("/api/v1/actions", body()).json()
    second = api_for("responder2").post("/api/v1/actions", body(reason="me too"))
    assert second.status_code == 409
    error = second.json()["error"]
    assert first["id"] in error["message"] and error["details"]["active_action"] == first["id"]
    assert ActionRun.objects.count() == 1


# --------------------------------------------------------------------------------------- policy matrix

REQUEST_MATRIX = [
    # (actor, target, expected status, expected state)
    ("nobody", DEV_MART, 403, None),
    ("viewer", DEV_MART, 403, None),
    ("viewer", PROD_MART, 403, None),
    ("responder", DEV_MART, 202, "queued"),
    ("responder", PROD_MART, 202, "awaiting_approval"),
    ("approver", DEV_MART, 202, "queued"),
    ("approver", PROD_MART, 202, "awaiting_approval"),
    ("admin", DEV_MART, 202, "queued"),
    ("admin", PROD_MART, 202, "awaiting_approval"),
]


@pytest.mark.parametrize(("who", "target", "status", "state"), REQUEST_MATRIX)
def test_request_policy_matrix(
    catalog: Any, api_for: Any, who: str, target: str, status: int, state: str | None
) -> None:
    resp = api_for(who).post("/api/v1/actions", body(target))
    assert resp.status_code == status, resp.content
    if state is None:
        assert "role" in resp.json()["error"]["message"]
        assert ActionRun.objects.count() == 0
        assert not AuditEvent.objects.filter(event__startswith="action.").exists()
    else:
        assert resp.json()["state"] == state


APPROVE_MATRIX = [
    ("viewer", 403),
    ("responder", 403),
    ("responder2", 403),
    ("approver", 200),
    ("admin", 200),
]


@pytest.mark.parametrize(("who", "status"), APPROVE_MATRIX)
def test_approve_policy_matrix(catalog: Any, api_for: Any, who: str, status: int) -> None:
    action = api_for("responder").post("/api/v1/actions", body(PROD_MART)).json()
    resp = api_for(who).post(f"/api/v1/actions/{action['id']}/approve", {"comment": "ok"})
    assert resp.status_code == status, resp.content
    state = ActionRun.objects.get(id=action["id"]).state
    assert state == (ActionState.QUEUED if status == 200 else ActionState.AWAITING_APPROVAL)


@pytest.mark.parametrize("who", ["approver", "admin"])
def test_nobody_approves_their_own_action(catalog: Any, api_for: Any, who: str) -> None:
    me = api_for(who)
    action = me.post("/api/v1/actions", body(PROD_MART)).json()
    resp = me.post(f"/api/v1/actions/{action['id']}/approve", {})
    assert resp.status_code == 403
    assert "different person" in resp.json()["error"]["message"]
    assert not Approval.objects.exists()
    assert ActionRun.objects.get(id=action["id"]).state == ActionState.AWAITING_APPROVAL


def test_two_person_approval_then_queued_and_audited(catalog: Any, api_for: Any) -> None:
    action = api_for("responder").post("/api/v1/actions", body(PROD_MART)).json()
    assert action["state"] == "awaiting_approval" and action["requires_approval"]
    resp = api_for("approver").post(f"/api/v1/actions/{action['id']}/approve", {"comment": "looked at the plan"})
    assert resp.status_code == 200
    data = resp.json()
    assert data["state"] == "queued"
    assert data["approvals"] == [
        {**data["approvals"][0], "approver": "alice", "decision": "approved", "comment": "looked at the plan"}
    ]
    assert audit_events(action["id"]) == ["action.requested", "action.planned", "action.approved"]
    again = api_for("approver2").post(f"/api/v1/actions/{action['id']}/approve", {})
    assert again.status_code == 409


def test_reject_ends_the_action(catalog: Any, api_for: Any) -> None:
    action = api_for("responder").post("/api/v1/actions", body(PROD_MART)).json()
    resp = api_for("approver").post(f"/api/v1/actions/{action['id']}/reject", {"comment": "not during peak"})
    assert resp.json()["state"] == "rejected"
    assert "action.rejected" in audit_events(action["id"])
    # the target is free again
    assert api_for("responder").post("/api/v1/actions", body(PROD_MART, reason="after peak")).status_code == 202


def test_cancel_rules(catalog: Any, api_for: Any) -> None:
    action = api_for("responder").post("/api/v1/actions", body(PROD_MART)).json()
    assert api_for("responder2").post(f"/api/v1/actions/{action['id']}/cancel", {}).status_code == 403
    resp = api_for("responder").post(f"/api/v1/actions/{action['id']}/cancel", {"reason": "wrong target"})
    assert resp.status_code == 200 and resp.json()["state"] == "cancelled"
    assert api_for("responder").post(f"/api/v1/actions/{action['id']}/cancel", {}).status_code == 409


def test_token_scopes_narrow_what_a_bot_may_do(catalog: Any, api_for: Any) -> None:
    reader = api_for("admin", scopes=["actions:read", "catalog:read"])
    resp = reader.post("/api/v1/actions", body())
    assert resp.status_code == 403
    assert "actions:write" in resp.json()["error"]["message"]
    assert reader.get("/api/v1/targets").status_code == 200
    assert ActionRun.objects.count() == 0


# ------------------------------------------------------------------------------ needs attention, resolve


def _left_needing_attention(action_id: str) -> None:
    """What the runner does when an action made something and could not see it through."""
    ActionRun.objects.filter(id=action_id).update(
        state=ActionState.NEEDS_ATTENTION, error="backfill 7 of x exists", attempts=1
    )


def test_an_action_needing_attention_keeps_its_target_until_a_person_resolves_it(catalog: Any, api_for: Any) -> None:
    first = api_for("responder").post("/api/v1/actions", body()).json()
    _left_needing_attention(first["id"])
    second = api_for("responder2").post("/api/v1/actions", body(reason="me too"))
    assert second.status_code == 409
    error = second.json()["error"]
    assert error["details"]["active_action"] == first["id"] and "needs attention" in error["message"]

    path = f"/api/v1/actions/{first['id']}/resolve"
    assert api_for("viewer").post(path, {"note": "looked"}).status_code == 403
    assert api_for("responder2").post(path, {}).status_code == 400  # a note is required
    resolved = api_for("responder2").post(path, {"note": "backfill 7 finished fine in Airflow"})
    assert resolved.status_code == 200, resolved.content
    assert resolved.json()["state"] == "needs_attention" and resolved.json()["resolved_at"]
    assert api_for("responder2").post(path, {"note": "again"}).status_code == 409
    event = AuditEvent.objects.get(object_id=first["id"], event="action.resolved")
    assert event.reason == "backfill 7 finished fine in Airflow" and event.actor_name == "rob"

    third = api_for("responder2").post("/api/v1/actions", body(reason="now it is free"))
    assert third.status_code == 202, third.content


def test_resolving_in_a_protected_environment_takes_an_approver(catalog: Any, api_for: Any) -> None:
    first = api_for("responder").post("/api/v1/actions", body(PROD_MART)).json()
    _left_needing_attention(first["id"])
    path = f"/api/v1/actions/{first['id']}/resolve"
    assert api_for("responder2").post(path, {"note": "checked"}).status_code == 403
    assert api_for("approver").post(path, {"note": "checked"}).status_code == 200


def test_only_an_action_needing_attention_can_be_resolved(catalog: Any, api_for: Any) -> None:
    first = api_for("responder").post("/api/v1/actions", body()).json()
    answer = api_for("responder").post(f"/api/v1/actions/{first['id']}/resolve", {"note": "nothing to do"})
    assert answer.status_code == 409 and "queued" in answer.json()["error"]["message"]

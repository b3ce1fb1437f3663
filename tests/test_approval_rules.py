"""What an approval means: it comes in time (requests expire), the requester still may ask for the
action, and the two-person rule holds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from controlplane.actions import services
from controlplane.actions.models import ActionRun
from controlplane.actions.reaper import actions_reap
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.errors import Conflict, Forbidden

pytestmark = pytest.mark.django_db

PROD_MART = "prod.weather.daily_weather_aggregates"


def request_prod_refresh(actor: Any) -> ActionRun:
    with change_context(channel=Channel.WEB, user=actor):
        result = services.action_request(
            actor=actor, verb="refresh-mart", target_key=PROD_MART, params={}, reason="stale mart"
        )
    assert result.action.state == "awaiting_approval"
    return result.action


def approve(actor: Any, action: ActionRun) -> ActionRun:
    with change_context(channel=Channel.WEB, user=actor):
        return services.action_approve(actor=actor, action_id=action.id, comment="go")


def age(action: ActionRun, hours: float) -> None:
    ActionRun.objects.filter(pk=action.pk).update(requested_at=timezone.now() - timedelta(hours=hours))


def test_an_approval_request_older_than_the_ttl_is_refused_and_ends_expired(catalog: Any, actors: Any) -> None:
    action = request_prod_refresh(actors["responder"])
    age(action, 24.5)  # ACTION_APPROVAL_TTL_HOURS defaults to 24
    with pytest.raises(Conflict, match="expired: nobody approved it within 24 h"):
        approve(actors["approver"], action)
    action.refresh_from_db()
    assert action.state == "expired" and action.finished_at is not None
    assert not action.approvals.exists()
    assert AuditEvent.objects.filter(event="action.expired", object_id=str(action.id)).count() == 1


def test_the_reaper_expires_actions_awaiting_approval_past_the_ttl(catalog: Any, actors: Any, settings: Any) -> None:
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "APPROVAL_TTL_HOURS": 2}
    old = request_prod_refresh(actors["responder"])
    age(old, 2.1)
    assert actions_reap()["expired"] == [str(old.id)]
    old.refresh_from_db()
    assert old.state == "expired"
    assert AuditEvent.objects.get(event="action.expired", object_id=str(old.id)).actor_name == "reaper"
    fresh = request_prod_refresh(actors["responder"])  # the target is free again
    age(fresh, 1.9)
    assert actions_reap()["expired"] == []
    approve(actors["approver"], fresh)
    fresh.refresh_from_db()
    assert fresh.state == "queued"


def test_approval_is_refused_when_the_requester_lost_the_responder_role(catalog: Any, actors: Any) -> None:
    rita = actors["responder"]
    action = request_prod_refresh(rita)
    rita.groups.remove(Group.objects.get(name="responder"))
    rita.groups.add(Group.objects.get_or_create(name="viewer")[0])
    with pytest.raises(Forbidden, match="rita requested this action but now has viewer, not the responder role"):
        approve(actors["approver"], action)
    action.refresh_from_db()
    assert action.state == "awaiting_approval" and not action.approvals.exists()


def test_approval_is_refused_when_the_requester_left(catalog: Any, actors: Any) -> None:
    rita = actors["responder"]
    action = request_prod_refresh(rita)
    rita.is_active = False
    rita.save(update_fields=["is_active"])
    with pytest.raises(Forbidden, match="now has an inactive account"):
        approve(actors["approver"], action)
    with change_context(channel=Channel.WEB, user=actors["approver"]):
        services.action_reject(actor=actors["approver"], action_id=action.id, comment="rita left")
    action.refresh_from_db()
    assert action.state == "rejected"


def test_a_plan_that_only_reads_needs_no_second_person_even_in_a_protected_environment() -> None:
    from connectors.base import Plan, Risk
    from controlplane.actions.policy import approval_needed
    from controlplane.catalog.models import Environment

    prod = Environment(name="prod", protected=True)
    reading = Plan(summary="review the week (reads files only)", risk=Risk.LOW, read_only=True)
    assert approval_needed(environment=prod, plan=reading).required is False
    writing = reading.model_copy(update={"read_only": False})
    assert approval_needed(environment=prod, plan=writing).required is True

"""Incident timelines follow the actions taken for them: the request, a second person's decision and the
end each reach the timeline through a signal of ``controlplane/actions/signals.py`` (the action path does
not know incidents)."""

from __future__ import annotations

from typing import Any

from controlplane.actions.models import ActionRun
from controlplane.incidents.models import IncidentEvent


def record_action_request(sender: Any, action: ActionRun, requester: str, **kwargs: Any) -> None:
    """A request made for an incident goes on its timeline, in the request's transaction (nothing to do,
    and no query, for an action not taken for an incident)."""
    if action.incident_id is None:
        return
    waiting = f"; waiting for approval ({action.approval_reason})" if action.requires_approval else ""
    IncidentEvent.objects.create(
        incident_id=action.incident_id,
        kind=IncidentEvent.Kind.ACTION,
        message=f"{requester} requested {action.verb} on {action.target.key}{waiting}",
        actor_id=action.requested_by_id,
        actor_name=requester,
        data={"action": str(action.id), "state": action.state, "verb": action.verb},
    )


def record_action_outcome(sender: Any, action_id: Any, incident_id: Any, **kwargs: Any) -> None:
    """Add the finished action's outcome to its incident's timeline (nothing to do, and no query, for an
    action not taken for an incident)."""
    if incident_id is None:
        return
    action = ActionRun.objects.select_related("target", "incident").filter(id=action_id, incident__isnull=False).first()
    if action is None or action.incident is None:
        return
    verdict = (action.verification or {}).get("summary") or action.error or ""
    IncidentEvent.objects.create(
        incident=action.incident,
        kind=IncidentEvent.Kind.ACTION,
        message=f"{action.verb} on {action.target.key} {action.state}" + (f": {verdict}" if verdict else ""),
        actor_name="control plane",
        data={"action": str(action.id), "state": action.state, "verb": action.verb},
    )


def record_action_decision(
    sender: Any, action_id: Any, decision: str, approver: str, comment: str = "", **kwargs: Any
) -> None:
    """Who approved or rejected which action of the incident, on its timeline."""
    action = ActionRun.objects.select_related("target").filter(id=action_id, incident__isnull=False).first()
    if action is None or action.incident_id is None:
        return
    IncidentEvent.objects.create(
        incident_id=action.incident_id,
        kind=IncidentEvent.Kind.ACTION,
        message=f"{approver} {decision} {action.verb} on {action.target.key}" + (f": {comment}" if comment else ""),
        actor_name=approver,
        data={"action": str(action.id), "decision": decision, "verb": action.verb},
    )

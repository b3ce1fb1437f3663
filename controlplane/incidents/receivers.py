"""Incident timelines follow the actions taken for them (the action path does not know incidents' UI)."""

from __future__ import annotations

from typing import Any

from controlplane.actions.models import ActionRun
from controlplane.incidents.models import IncidentEvent


def record_action_outcome(sender: Any, action_id: Any, **kwargs: Any) -> None:
    """Add the finished action's outcome to its incident's timeline."""
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

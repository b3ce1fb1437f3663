"""Reads of the audit trail."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db.models import QuerySet

from controlplane.audit.models import AuditEvent

_FILTERS = {
    "event": "event",
    "object_type": "object_type",
    "object_id": "object_id",
    "actor": "actor_name",
    "channel": "channel",
    "request_id": "request_id",
}


def audit_list(filters: Mapping[str, Any] | None = None) -> QuerySet[AuditEvent]:
    qs = AuditEvent.objects.all()
    for name, value in (filters or {}).items():
        if name in _FILTERS and value:
            qs = qs.filter(**{_FILTERS[name]: value})
    return qs.order_by("-seq")


def audit_for_object(object_type: str, object_id: str) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(object_type=object_type, object_id=object_id).order_by("seq")


def audit_for_action(action_id: Any) -> QuerySet[AuditEvent]:
    """The audit trail of one action, oldest first (the object type audit_record gives an ActionRun)."""
    return audit_for_object("actions.actionrun", str(action_id))

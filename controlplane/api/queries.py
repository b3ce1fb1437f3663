"""The query parameters each API list accepts: validated at the edge (400 naming the field) and documented in
the OpenAPI schema from the same declaration. Unknown parameters are refused like unknown body fields, so a
misspelt filter is an error instead of an unfiltered list."""

from __future__ import annotations

import math
from typing import Any

from django.http import QueryDict
from rest_framework import serializers

from controlplane.actions.models import ActionState
from controlplane.api.serializers import StrictSerializer
from controlplane.api.waiting import MAX_WAIT_SECONDS
from controlplane.audit.context import Channel
from controlplane.incidents.models import Incident
from controlplane.incidents.selectors import AGE_CHOICES, MAX_AGE_HOURS

PAGE_SIZE_MAX = 200
# Paging parameters are read by the paginator itself; the filters go to the selector.
PAGING = ("cursor", "limit")
CHANNELS = [value for value, _ in Channel.CHOICES]


class FiniteFloatField(serializers.FloatField):
    """A float that is a number: ``inf`` and ``nan`` parse as floats but are no count of anything."""

    def to_internal_value(self, data: Any) -> float:
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("invalid")
        return value


def _text(max_length: int, help_text: str) -> serializers.CharField:
    return serializers.CharField(required=False, max_length=max_length, help_text=help_text)


class PageQuery(StrictSerializer):
    cursor = serializers.CharField(
        required=False, max_length=1000, help_text="the `next` or `previous` link's cursor from an earlier page"
    )
    limit = serializers.IntegerField(required=False, min_value=1, max_value=PAGE_SIZE_MAX, help_text="page size")


class ActionListQuery(PageQuery):
    state = serializers.ChoiceField(required=False, choices=ActionState.values)
    verb = _text(40, "a verb, e.g. refresh-mart")
    channel = serializers.ChoiceField(required=False, choices=CHANNELS)
    incident = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    target = _text(200, "a catalog target key")
    environment = _text(40, "an environment name")
    requested_by = _text(150, "a username")


class IncidentListQuery(PageQuery):
    status = serializers.ChoiceField(
        required=False,
        choices=[*Incident.Status.values, "open", "all"],
        help_text="one status, `open` for all but resolved, `all` for any",
    )
    severity = serializers.ChoiceField(required=False, choices=Incident.Severity.values)
    pipeline = _text(120, "a pipeline name")
    # A declared field named like Field.source: DRF takes declared fields off the class, so it is a filter here.
    source = _text(40, "the system that raised the incident, e.g. airflow")  # type: ignore[assignment]
    open = serializers.BooleanField(required=False, help_text="true: all but resolved")
    max_age_hours = FiniteFloatField(
        required=False, min_value=0, max_value=MAX_AGE_HOURS, help_text="opened at most this many hours ago"
    )
    age = serializers.ChoiceField(required=False, choices=list(AGE_CHOICES))


class AuditListQuery(PageQuery):
    event = _text(64, "an event name, e.g. action.requested")
    object_type = _text(100, "e.g. actions.actionrun")
    object_id = _text(64, "the object's id")
    actor = _text(150, "the actor's name")
    channel = serializers.ChoiceField(required=False, choices=CHANNELS)
    request_id = _text(64, "the X-Request-ID of the request that made the change")


class TargetListQuery(StrictSerializer):
    kind = _text(40, "a target kind, e.g. matview")
    environment = _text(40, "an environment name")


class ActionReadQuery(StrictSerializer):
    wait = serializers.IntegerField(
        required=False,
        default=0,
        min_value=0,
        max_value=MAX_WAIT_SECONDS,
        help_text=f"answer once the action has ended, or after this many seconds (0 to {MAX_WAIT_SECONDS})",
    )


def valid_query(serializer_cls: type[StrictSerializer], query: QueryDict) -> dict[str, Any]:
    """The validated parameters (paging ones left to the paginator); a ValidationError, a 400 naming the field."""
    serializer = serializer_cls(data=query)
    serializer.is_valid(raise_exception=True)
    return {name: value for name, value in serializer.validated_data.items() if name not in PAGING}

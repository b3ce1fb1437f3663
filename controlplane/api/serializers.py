"""Shapes of the API's requests and responses (also the OpenAPI schema)."""

from __future__ import annotations

import re
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from connectors.base import Plan, Risk
from connectors.registry import get_connector_class
from controlplane.actions.models import ActionLogLine, ActionRun, Approval
from controlplane.actions.selectors import action_approvals, action_log_tail
from controlplane.audit.models import AuditEvent
from controlplane.catalog.models import Target
from controlplane.incidents.models import Incident, IncidentEvent
from controlplane.incidents.selectors import Timeline, incident_log_url, incident_timeline, suggested_actions
from runbooks.selectors import runbooks_for_incident

LOG_TAIL = 50
TIMELINE_DETAIL = 50  # newest timeline entries an incident's detail carries


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses unknown fields, so a typo in a bot's payload is an error instead of silently ignored."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["the body must be a JSON object"]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: "unknown field" for name in unknown})
        return super().to_internal_value(data)


class ActionRequestSerializer(StrictSerializer):
    verb = serializers.CharField(max_length=40)
    target = serializers.CharField(max_length=200)
    params = serializers.DictField(required=False, default=dict)
    reason = serializers.CharField(max_length=2000)
    incident = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)


class ActionPreviewSerializer(StrictSerializer):
    verb = serializers.CharField(max_length=40)
    target = serializers.CharField(max_length=200)
    params = serializers.DictField(required=False, default=dict)


class DecisionSerializer(StrictSerializer):
    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class CancelSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class ResolveSerializer(StrictSerializer):
    note = serializers.CharField(max_length=2000)


class ApprovalSerializer(serializers.ModelSerializer[Approval]):
    approver = serializers.CharField(source="approver.get_username")

    class Meta:
        model = Approval
        fields = ["approver", "decision", "comment", "channel", "decided_at"]


class LogLineSerializer(serializers.ModelSerializer[ActionLogLine]):
    class Meta:
        model = ActionLogLine
        fields = ["id", "at", "attempt", "level", "message"]


class TouchSerializer(serializers.Serializer[Any]):
    kind = serializers.CharField()
    name = serializers.CharField()
    detail = serializers.DictField()


class PlanSerializer(serializers.Serializer[Any]):
    """A verb's plan (``connectors.base.Plan``) as the API shows it: what will be touched, how much, what it
    locks, how risky it is and what it is expected to cost. Describes the schema; the plan itself is the
    connector's ``model_dump``."""

    summary = serializers.CharField()
    touches = TouchSerializer(many=True)
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="task instances, partitions, rows ...")
    estimated_bytes = serializers.IntegerField(allow_null=True, help_text="bytes the action is expected to read")
    estimated_cost_usd = serializers.FloatField(
        allow_null=True,
        help_text="what running it is expected to cost in US dollars; at or over APPROVAL_COST_USD it needs approval",
    )
    locks = serializers.ListField(child=serializers.CharField())
    warnings = serializers.ListField(child=serializers.CharField())
    risk = serializers.ChoiceField(choices=[r.value for r in Risk])
    requires_consent = serializers.BooleanField()
    consent_reason = serializers.CharField(allow_blank=True)
    details = serializers.DictField()
    # A declared field named like Field.read_only: DRF takes declared fields off the class, so it is a field here.
    read_only = serializers.BooleanField()  # type: ignore[assignment]
    settling = serializers.BooleanField()


# Every field a plan has besides its summary, at its default: an action stored before a field existed (the cost
# figures came later) shows it at its default, so every plan the API returns has the shape PlanSerializer states.
_PLAN_DEFAULTS = Plan(summary="").model_dump(mode="json", exclude={"summary"})


def plan_representation(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored plan (``ActionRun.plan``) with the fields it lacks at their defaults."""
    return {**_PLAN_DEFAULTS, **stored} if stored else stored


class ActionSummarySerializer(serializers.ModelSerializer[ActionRun]):
    target = serializers.CharField(source="target.key")
    environment = serializers.CharField(source="environment.name")
    requested_by = serializers.CharField(source="requested_by.get_username")

    class Meta:
        model = ActionRun
        fields = [
            "id",
            "verb",
            "target",
            "environment",
            "state",
            "risk",
            "requires_approval",
            "approval_reason",
            "channel",
            "requested_by",
            "requested_at",
            "incident",
            "reason",
            "attempts",
            "started_at",
            "finished_at",
            "error",
        ]


class ActionDetailSerializer(ActionSummarySerializer):
    """An action with its decisions and the last ``LOG_TAIL`` lines of its log, oldest first. With
    ``context={"fresh": True}`` (an action this very request created) both are empty, without a query."""

    plan = serializers.SerializerMethodField()
    approvals = serializers.SerializerMethodField()
    log = serializers.SerializerMethodField()

    class Meta(ActionSummarySerializer.Meta):
        fields = [
            *ActionSummarySerializer.Meta.fields,
            "params",
            "plan",
            "approvals",
            "outcome",
            "verification",
            "cancel_requested",
            "resolved_at",
            "progress_done",
            "progress_total",
            "max_attempts",
            "queued_at",
            "heartbeat_at",
            "lease_expires_at",
            "worker",
            "request_id",
            "log",
        ]

    @extend_schema_field(PlanSerializer)
    def get_plan(self, action: ActionRun) -> dict[str, Any]:
        return plan_representation(action.plan)

    @extend_schema_field(ApprovalSerializer(many=True))
    def get_approvals(self, action: ActionRun) -> list[dict[str, Any]]:
        if self.context.get("fresh"):
            return []
        return ApprovalSerializer(action_approvals(action), many=True).data  # type: ignore[return-value]

    @extend_schema_field(LogLineSerializer(many=True))
    def get_log(self, action: ActionRun) -> list[dict[str, Any]]:
        if self.context.get("fresh"):
            return []
        return LogLineSerializer(action_log_tail(action.id, LOG_TAIL), many=True).data  # type: ignore[return-value]


class TargetSummarySerializer(serializers.ModelSerializer[Target]):
    connection = serializers.CharField(source="connection.name")
    connector = serializers.CharField(source="connection.kind")
    environment = serializers.CharField(source="connection.environment.name")
    protected = serializers.BooleanField(source="connection.environment.protected")
    pipeline = serializers.CharField(source="pipeline.name", default=None, allow_null=True)

    class Meta:
        model = Target
        fields = [
            "key",
            "kind",
            "display_name",
            "connection",
            "connector",
            "environment",
            "protected",
            "pipeline",
        ]


class TargetDetailSerializer(TargetSummarySerializer):
    verbs = serializers.SerializerMethodField()
    checks = serializers.SerializerMethodField()

    class Meta(TargetSummarySerializer.Meta):
        fields = [*TargetSummarySerializer.Meta.fields, "description", "locator", "verbs", "checks"]

    def get_verbs(self, target: Target) -> list[dict[str, Any]]:
        cls = get_connector_class(target.connection.kind)
        return [
            {
                "name": v.name,
                "description": v.description,
                "idempotent": v.idempotent,
                "params_schema": v.params_model.model_json_schema(),
            }
            for v in cls.verbs
            if target.kind in v.target_kinds
        ]

    def get_checks(self, target: Target) -> list[dict[str, Any]]:
        cls = get_connector_class(target.connection.kind)
        return [
            {
                "name": c.name,
                "description": c.description,
                "params_schema": c.params_model.model_json_schema(),
            }
            for c in cls.checks
            if target.kind in c.target_kinds
        ]


class AuditEventSerializer(serializers.ModelSerializer[AuditEvent]):
    class Meta:
        model = AuditEvent
        fields = [
            "seq",
            "at",
            "actor_name",
            "channel",
            "request_id",
            "event",
            "object_type",
            "object_id",
            "object_repr",
            "before",
            "after",
            "reason",
            "prev_hash",
            "hash",
        ]


class IncidentEventSerializer(serializers.ModelSerializer[IncidentEvent]):
    class Meta:
        model = IncidentEvent
        fields = ["at", "kind", "message", "actor_name", "data"]


class SuggestedRunbookSerializer(serializers.Serializer[Any]):
    id = serializers.CharField(help_text="start it with POST /api/v1/runbook-runs")
    title = serializers.CharField()
    version = serializers.IntegerField()


class IncidentSummarySerializer(serializers.ModelSerializer[Incident]):
    pipeline = serializers.CharField(source="pipeline.name", default=None, allow_null=True)

    class Meta:
        model = Incident
        fields = [
            "id", "title", "severity", "status", "alert_type", "source", "pipeline", "fingerprint",
            "alert_count", "created_at", "last_alert_at", "acknowledged_at", "mitigated_at", "resolved_at",
        ]  # fmt: skip


class IncidentDetailSerializer(IncidentSummarySerializer):
    """An incident with the newest TIMELINE_DETAIL timeline entries, oldest first; ``timeline_more`` says
    older ones exist and ``timeline_url`` pages through the whole timeline."""

    targets = serializers.SerializerMethodField()
    suggested_actions = serializers.SerializerMethodField()
    suggested_runbooks = serializers.SerializerMethodField()
    log_url = serializers.SerializerMethodField()
    log_excerpt = serializers.SerializerMethodField()
    timeline = serializers.SerializerMethodField()
    timeline_more = serializers.SerializerMethodField()
    timeline_url = serializers.SerializerMethodField()

    class Meta(IncidentSummarySerializer.Meta):
        fields = [
            *IncidentSummarySerializer.Meta.fields, "summary", "details", "log_url", "log_excerpt", "targets",
            "suggested_actions", "suggested_runbooks", "timeline", "timeline_more", "timeline_url",
        ]  # fmt: skip

    def get_targets(self, incident: Incident) -> list[str]:
        return [t.key for t in incident.targets.all()]

    def get_log_url(self, incident: Incident) -> str | None:
        return incident_log_url(incident)

    def get_log_excerpt(self, incident: Incident) -> str | None:
        return (incident.details or {}).get("log_excerpt")

    def get_suggested_actions(self, incident: Incident) -> list[dict[str, Any]]:
        return suggested_actions(incident)

    @extend_schema_field(SuggestedRunbookSerializer(many=True))
    def get_suggested_runbooks(self, incident: Incident) -> list[dict[str, Any]]:
        """The runbooks that fit the incident, best first (what its page offers to start)."""
        return [{"id": v.runbook.slug, "title": v.title, "version": v.version} for v in runbooks_for_incident(incident)]

    def _timeline(self, incident: Incident) -> Timeline:
        read: dict[int, Timeline] = self.context.setdefault("timelines", {})
        if incident.pk not in read:  # one read serves the three timeline fields
            read[incident.pk] = incident_timeline(incident, limit=TIMELINE_DETAIL)
        return read[incident.pk]

    @extend_schema_field(IncidentEventSerializer(many=True))
    def get_timeline(self, incident: Incident) -> list[dict[str, Any]]:
        return list(IncidentEventSerializer(self._timeline(incident).events, many=True).data)

    def get_timeline_more(self, incident: Incident) -> bool:
        return self._timeline(incident).truncated

    def get_timeline_url(self, incident: Incident) -> str:
        path = reverse("api:incident-timeline", args=[incident.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


# Shapes of answers the views build as dicts: declared here so the OpenAPI schema states them.


class PickerChoiceSerializer(serializers.Serializer[Any]):
    value = serializers.JSONField()
    # A declared field named like Field.label: DRF takes declared fields off the class, so it is a field here.
    label = serializers.CharField()  # type: ignore[assignment]


class TargetChoicesSerializer(serializers.Serializer[Any]):
    target = serializers.CharField()
    choices = PickerChoiceSerializer(many=True)


class ActionPreviewResultSerializer(serializers.Serializer[Any]):
    target = serializers.CharField()
    verb = serializers.CharField()
    params = serializers.DictField(help_text="the params as the verb's schema reads them, defaults filled in")
    plan = PlanSerializer(help_text="what the action would touch, count, lock, risk and cost")


class IncidentCommentResultSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    message = serializers.CharField()


class IncidentIntakeResultSerializer(IncidentSummarySerializer):
    created = serializers.BooleanField(help_text="true: a new incident; false: added to the open one")

    class Meta(IncidentSummarySerializer.Meta):
        fields = [*IncidentSummarySerializer.Meta.fields, "created"]


# Alert intakes: the bodies bots and Alertmanager send (docs/chatops.md).

_WORD = r"^[a-z0-9][a-z0-9_.\-]*$"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")  # Prometheus' rule for label (and annotation) names


def _without_nul(value: Any, where: str) -> Any:
    """Refuse a NUL character anywhere in a JSON value (keys included): Postgres cannot store it in JSONB."""
    if isinstance(value, str) and "\x00" in value:
        raise serializers.ValidationError(f"{where} contains a NUL character")
    if isinstance(value, dict):
        for key, item in value.items():
            _without_nul(key, where)
            _without_nul(item, where)
    elif isinstance(value, list):
        for item in value:
            _without_nul(item, where)
    return value


def _label_names(value: dict[str, str]) -> dict[str, str]:
    bad = sorted(k for k in value if not _LABEL_NAME.fullmatch(k))[:5]
    if bad:
        raise serializers.ValidationError(f"not label names (Prometheus: [a-zA-Z_][a-zA-Z0-9_]*): {bad}")
    return value


class GenericAlertSerializer(StrictSerializer):
    """``POST /api/v1/alerts``: one alert from any monitoring system or bot."""

    # Declared fields named like Field.source: DRF takes declared fields off the class, so it is a field here.
    source = serializers.RegexField(  # type: ignore[assignment]
        _WORD, max_length=40, help_text="the system that raised it, lower-case (e.g. `grafana`, `dbt`, `my-bot`)"
    )
    pipeline = serializers.CharField(
        max_length=120, required=False, allow_null=True, default=None, help_text="a catalog pipeline's name"
    )
    target = serializers.CharField(
        max_length=200, required=False, allow_null=True, default=None, help_text="a catalog target's key"
    )
    severity = serializers.ChoiceField(choices=Incident.Severity.choices)
    summary = serializers.CharField(max_length=300, help_text="one line: the incident's title")
    details = serializers.DictField(required=False, default=dict, help_text="anything else, kept on the incident")
    alert_type = serializers.RegexField(
        _WORD,
        max_length=64,
        required=False,
        default="",
        help_text="the kind of problem runbooks are matched on (e.g. `freshness`); default `<source>.alert`",
    )
    dedup_key = serializers.CharField(
        max_length=500,
        required=False,
        allow_null=True,
        default=None,
        help_text="alerts of one source with the same key are one incident while it is open; "
        "default: the same alert_type on the same pipeline and target",
    )
    occurred_at = serializers.DateTimeField(
        required=False, allow_null=True, default=None, help_text="when it happened; a repeat with a new time is listed"
    )

    def validate_details(self, value: dict[str, Any]) -> dict[str, Any]:
        return _without_nul(value, "details")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not (attrs.get("pipeline") or attrs.get("target")):
            raise serializers.ValidationError({"pipeline": ["name the pipeline or the target (or both)"]})
        return attrs


class AlertmanagerAlertSerializer(serializers.Serializer[Any]):
    """One alert of an Alertmanager webhook (unknown keys are ignored: Alertmanager adds some over time)."""

    status = serializers.ChoiceField(choices=["firing", "resolved"])
    labels = serializers.DictField(child=serializers.CharField(max_length=2000, allow_blank=True))
    annotations = serializers.DictField(
        child=serializers.CharField(max_length=10_000, allow_blank=True), required=False, default=dict
    )
    startsAt = serializers.DateTimeField()  # Alertmanager spells its fields in camelCase
    endsAt = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    generatorURL = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    fingerprint = serializers.RegexField(r"^[0-9a-fA-F]{1,64}$", required=False, default="")

    def validate_labels(self, value: dict[str, str]) -> dict[str, str]:
        return _label_names(value)

    def validate_annotations(self, value: dict[str, str]) -> dict[str, str]:
        return _label_names(value)


MAX_ALERTMANAGER_ALERTS = 200


class AlertmanagerWebhookSerializer(serializers.Serializer[Any]):
    """Alertmanager's webhook payload, version 4
    (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)."""

    version = serializers.ChoiceField(choices=["4"], help_text='"4": the payload version this intake reads')
    groupKey = serializers.CharField(max_length=2000)
    status = serializers.ChoiceField(choices=["firing", "resolved"])
    receiver = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    externalURL = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    truncatedAlerts = serializers.IntegerField(required=False, min_value=0, default=0)
    alerts = serializers.ListField(
        child=AlertmanagerAlertSerializer(), allow_empty=False, max_length=MAX_ALERTMANAGER_ALERTS
    )


class AlertmanagerAlertResultSerializer(serializers.Serializer[Any]):
    fingerprint = serializers.CharField()
    status = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["opened", "counted", "noted", "no_open_incident"])
    incident = serializers.IntegerField(allow_null=True)


class AlertmanagerResultSerializer(serializers.Serializer[Any]):
    alerts = AlertmanagerAlertResultSerializer(many=True)

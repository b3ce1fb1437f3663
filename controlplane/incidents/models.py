"""Incidents: what broke, how bad, and what was done about it."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.catalog.models import Pipeline, Target


class Incident(models.Model):
    """An incident, deduplicated by ``fingerprint`` while it is not resolved.

    Status moves forward only: triggered -> acknowledged -> mitigated -> resolved, and any open status
    may go straight to resolved (``incidents.services``); each move stamps its ``*_at`` time once.

    An alert whose fingerprint matches an open incident is counted on it (``alert_count``, with a bounded
    number of timeline entries; ``incidents.services``) instead of opening another; the partial unique
    index makes that hold under concurrent alerts too.
    """

    class Severity(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"
        HIGH = "high"
        CRITICAL = "critical"

    class Status(models.TextChoices):
        TRIGGERED = "triggered"
        ACKNOWLEDGED = "acknowledged"
        MITIGATED = "mitigated"
        RESOLVED = "resolved"

    title = models.CharField(max_length=300)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.MEDIUM)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.TRIGGERED)
    fingerprint = models.CharField(max_length=600, db_index=True)
    alert_type = models.CharField(max_length=64, blank=True, help_text="e.g. airflow.task_failed")
    source = models.CharField(max_length=40, blank=True, help_text="the system that raised it, e.g. airflow")
    summary = models.TextField(blank=True, help_text="the error as the alert reported it")
    details = models.JSONField(default=dict, blank=True, help_text="the first alert's payload")
    pipeline = models.ForeignKey(Pipeline, null=True, blank=True, on_delete=models.SET_NULL, related_name="incidents")
    targets = models.ManyToManyField(Target, blank=True, related_name="incidents")
    alert_count = models.PositiveIntegerField(default=0)
    last_alert_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    mitigated_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["fingerprint"],
                condition=~models.Q(status="resolved"),
                name="one_open_incident_per_fingerprint",
            )
        ]
        indexes = [models.Index(fields=["status", "-created_at"], name="incident_status_idx")]

    def __str__(self) -> str:
        return f"INC-{self.pk} {self.title}"


class IncidentEvent(models.Model):
    """One entry of an incident's timeline (alert, action outcome, comment, status change)."""

    class Kind(models.TextChoices):
        ALERT = "alert"
        ACTION = "action"
        COMMENT = "comment"
        STATUS = "status"
        STEP = "step"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    message = models.TextField()
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["incident", "at"], name="incident_event_time_idx")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"

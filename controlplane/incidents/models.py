"""Incidents: what broke, how bad, and what was done about it."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.catalog.models import Pipeline


class Incident(models.Model):
    """An incident, deduplicated by ``fingerprint`` while open."""

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
    fingerprint = models.CharField(max_length=200, db_index=True)
    pipeline = models.ForeignKey(Pipeline, null=True, blank=True, on_delete=models.SET_NULL, related_name="incidents")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["fingerprint"],
                condition=~models.Q(status="resolved"),
                name="one_open_incident_per_fingerprint",
            )
        ]

    def __str__(self) -> str:
        return f"INC-{self.pk} {self.title}"


class IncidentEvent(models.Model):
    """One entry of an incident's timeline (alert, action outcome, comment, status change)."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=32)
    message = models.TextField()
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["incident", "at"], name="incident_event_time_idx")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"

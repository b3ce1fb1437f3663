"""Runbooks as loaded into the database, and the runs that follow them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class Runbook(models.Model):
    """A procedure by its stable id (``004-rehydrate-mart``); its content lives in versions."""

    slug = models.CharField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    latest = models.ForeignKey("RunbookVersion", null=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class RunbookVersion(models.Model):
    """One loaded version of a runbook file: the validated definition as JSON and the file's digest.

    Versions are never changed once loaded; a run points at the version it follows."""

    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    digest = models.CharField(max_length=64)
    definition = models.JSONField()
    source_path = models.CharField(max_length=300, blank=True)
    loaded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["runbook__slug", "-version"]
        constraints = [models.UniqueConstraint(fields=["runbook", "version"], name="one_runbook_version")]

    def __str__(self) -> str:
        return f"{self.runbook.slug} v{self.version}"

    @property
    def title(self) -> str:
        return str(self.definition.get("title", ""))

    @property
    def steps(self) -> list[dict[str, Any]]:
        return list(self.definition.get("steps", []))


class RunbookRun(models.Model):
    """Someone following one runbook version, for an incident or on its own.

    The run's state is in the database only (step rows), so it survives restarts of web and worker;
    ``current`` is the index of the step the run is at (``len(steps)`` once finished)."""

    class State(models.TextChoices):
        RUNNING = "running"  # a step is being carried out by the system (a check, a notification)
        WAITING = "waiting"  # a step waits for a person or for its action to end
        BLOCKED = "blocked"  # a step failed: a person retries or skips it
        COMPLETED = "completed"
        ABANDONED = "abandoned"

    runbook_version = models.ForeignKey(RunbookVersion, on_delete=models.PROTECT, related_name="runs")
    incident = models.ForeignKey(
        "incidents.Incident", null=True, blank=True, on_delete=models.SET_NULL, related_name="runbook_runs"
    )
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    channel = models.CharField(max_length=16)
    params = models.JSONField(default=dict)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    current = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["incident", "-started_at"], name="run_incident_idx")]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.runbook_version}"


class StepRun(models.Model):
    """One step of a run: its state, its result (findings, outcome, choice ...) and, for an action step,
    the action it launched (one per attempt; the unique constraint keeps a step from launching twice)."""

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        WAITING = "waiting"
        DONE = "done"
        SKIPPED = "skipped"
        FAILED = "failed"

    run = models.ForeignKey(RunbookRun, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField()
    step_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=16)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempt = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    action = models.OneToOneField(
        "actions.ActionRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="runbook_step"
    )
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="one_step_row_per_index")]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.index} {self.step_id} {self.state}"

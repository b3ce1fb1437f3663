"""Actions: one remediation verb on one catalog target, from request to verified outcome."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from controlplane.audit.context import Channel
from controlplane.catalog.models import Environment, Target
from controlplane.incidents.models import Incident


class ActionState(models.TextChoices):
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    NEEDS_ATTENTION = "needs_attention"


# While an action is in one of these states no other action may be active on its target. The database
# enforces it with a partial unique index, so concurrent requests cannot both pass a count-then-insert.
ACTIVE_STATES = (ActionState.AWAITING_APPROVAL, ActionState.QUEUED, ActionState.RUNNING)
# An action that made something it could not see through (``needs_attention``) keeps its target locked too,
# until a person resolves it (``resolved_at``): nobody starts a second backfill beside an orphaned first.
HOLDS_TARGET = models.Q(state__in=ACTIVE_STATES) | models.Q(state=ActionState.NEEDS_ATTENTION, resolved_at__isnull=True)
TERMINAL_STATES = (
    ActionState.SUCCEEDED,
    ActionState.FAILED,
    ActionState.CANCELLED,
    ActionState.REJECTED,
    ActionState.EXPIRED,
    ActionState.NEEDS_ATTENTION,
)


class ActionRun(models.Model):
    """One requested verb on one target.

    Lifecycle: ``awaiting_approval`` (protected environment or risky plan) -> ``queued`` -> ``running``
    (claimed by exactly one worker with a conditional UPDATE; the lease is renewed by heartbeats) ->
    ``succeeded`` only when verified, else ``failed``. ``cancelled``, ``rejected``, ``expired`` (awaited
    approval longer than ``ACTION_APPROVAL_TTL_HOURS``) and ``needs_attention`` (lease lost on a
    non-idempotent verb, or attempts exhausted, or the effect made and its follow-up failed) are terminal too;
    ``needs_attention`` keeps the target locked until a person resolves it (``resolved_at``, ``resolved_by``).
    The id doubles as the idempotency token passed to the connector.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    verb = models.CharField(max_length=40)
    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="actions")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="actions")
    params = models.JSONField(default=dict)
    reason = models.TextField()
    channel = models.CharField(max_length=16, choices=Channel.CHOICES)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="actions")
    requested_at = models.DateTimeField(auto_now_add=True)  # indexed with id: action_history_idx
    request_id = models.CharField(max_length=64, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001 (NULL = no key, outside the unique constraint)
    request_fingerprint = models.CharField(max_length=64)
    incident = models.ForeignKey(Incident, null=True, blank=True, on_delete=models.SET_NULL, related_name="actions")

    plan = models.JSONField(default=dict)
    risk = models.CharField(max_length=16, default="low")
    requires_approval = models.BooleanField(default=False)
    approval_reason = models.CharField(max_length=200, blank=True)
    idempotent = models.BooleanField(default=True)

    state = models.CharField(max_length=24, choices=ActionState.choices)  # indexed: action_state_history_idx
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    queued_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    cancel_requested = models.BooleanField(default=False)
    progress_done = models.PositiveIntegerField(null=True, blank=True)
    progress_total = models.PositiveIntegerField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.JSONField(null=True, blank=True)
    verification = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            models.UniqueConstraint(fields=["target"], condition=HOLDS_TARGET, name="one_active_action_per_target"),
            models.UniqueConstraint(
                fields=["requested_by", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="unique_idempotency_key_per_requester",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "lease_expires_at"], name="action_lease_idx"),
            # The history's keyset order (newest first, id breaking ties), alone and after each filter of
            # the history pages: every page is one range scan of one of these, however deep it is and however
            # rare the filtered value (controlplane/web/pagination.py, bench/history_pages.py). They also
            # serve the plain lookups by state, target and environment.
            models.Index(fields=["requested_at", "id"], name="action_history_idx"),
            models.Index(fields=["state", "requested_at", "id"], name="action_state_history_idx"),
            models.Index(fields=["target", "requested_at", "id"], name="action_target_history_idx"),
            models.Index(fields=["environment", "requested_at", "id"], name="action_env_history_idx"),
            models.Index(fields=["verb", "requested_at", "id"], name="action_verb_history_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.verb} {self.target.key if self.target_id else '?'} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def awaits_resolution(self) -> bool:
        """Ended ``needs_attention`` and nobody resolved it yet: the target is still locked."""
        return self.state == ActionState.NEEDS_ATTENTION and self.resolved_at is None

    @property
    def progress_percent(self) -> int | None:
        if not self.progress_total or self.progress_done is None:
            return None
        return min(100, round(100 * self.progress_done / self.progress_total))

    @property
    def short_id(self) -> str:
        return str(self.id)[:8]

    def audit_state(self) -> dict[str, object]:
        return {"state": self.state, "attempts": self.attempts}


class ActionLogLine(models.Model):
    """One line of an action's log: a table of its own, never a growing JSON column."""

    action = models.ForeignKey(ActionRun, on_delete=models.CASCADE, related_name="log_lines")
    at = models.DateTimeField(default=timezone.now)  # when it was written (the runner stores lines a moment later)
    attempt = models.PositiveIntegerField(default=0)
    level = models.CharField(max_length=8, default="info")
    message = models.TextField()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["action", "id"], name="action_log_idx")]

    def __str__(self) -> str:
        return self.message[:80]


class Approval(models.Model):
    """A second person's decision on an action. Nobody decides on their own action."""

    class Decision(models.TextChoices):
        APPROVED = "approved"
        REJECTED = "rejected"

    action = models.ForeignKey(ActionRun, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="approvals")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    comment = models.TextField(blank=True)
    channel = models.CharField(max_length=16, choices=Channel.CHOICES)
    decided_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["decided_at"]
        constraints = [models.UniqueConstraint(fields=["action", "approver"], name="one_decision_per_approver")]

    def __str__(self) -> str:
        return f"{self.decision} by {self.approver}"

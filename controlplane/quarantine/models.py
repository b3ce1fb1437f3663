"""Weekly quarantine reviews (seed 003, section 5): the review record, its (table, reason) items, the
dispositions people decided on them, and the schedule that creates reviews.

A review is made from the outcome of a ``quarantine-review`` action (``services.review_create_from_outcome``);
its items are the reasons of the week per table. An item over the threshold or new needs a disposition;
release, discard and keep are actions on the table (through ``actions.services.action_request``) and count
once their action succeeded; escalate opens an incident and counts at once. The review is done when every
item that needs a disposition has one.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models

from controlplane.actions.models import ActionRun
from controlplane.catalog.models import Environment, Target
from controlplane.incidents.models import Incident


class QuarantineReview(models.Model):
    """One source's review of one week (``week_start``..``week_end``, 7 days, both inclusive, UTC dates).

    ``summary`` is the connector's weekly summary JSON (``connectors.quarantine.stats.weekly_summary``),
    ``escalations`` and ``breaches`` the escalation rules and (table, day) threshold breaches that fired,
    all as the ``quarantine-review`` action's outcome gave them. ``threshold_pct`` is the source's
    threshold when the review was made (the heat map colours against it). One review per (target,
    week_end): a second action for the same week finds the first review. ``completed_at`` is set (and
    audited) when the last item needing a disposition got one.
    """

    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="quarantine_reviews")
    week_start = models.DateField()
    week_end = models.DateField()
    threshold_pct = models.FloatField(null=True, blank=True)
    summary = models.JSONField(default=dict)
    escalations = models.JSONField(default=list)
    breaches = models.JSONField(default=list)
    created_by_action = models.ForeignKey(
        ActionRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="quarantine_reviews"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-week_end", "-id"]
        constraints = [models.UniqueConstraint(fields=["target", "week_end"], name="one_review_per_source_week")]
        indexes = [models.Index(fields=["-created_at"], name="quarantine_review_created_idx")]

    def __str__(self) -> str:
        return f"{self.target.key if self.target_id else '?'} week ending {self.week_end}"

    @property
    def status(self) -> str:
        """``open`` until every item needing a disposition has one, then ``done``."""
        return "done" if self.completed_at is not None else "open"

    def audit_state(self) -> dict[str, object]:
        return {
            "target": self.target.key,
            "week_start": self.week_start.isoformat(),
            "week_end": self.week_end.isoformat(),
            "status": self.status,
        }


class ReviewItem(models.Model):
    """One (table, reason) of a review with the week's counts from the summary.

    ``over_threshold``: the table had at least one day over the source's threshold in the week (a breach).
    ``needs_disposition`` = ``over_threshold or new``; such an item must get a disposition before the review
    is done. ``sample_keys`` are the reason's sample record keys (evidence for an escalation).
    """

    review = models.ForeignKey(QuarantineReview, on_delete=models.CASCADE, related_name="items")
    table = models.CharField(max_length=128)
    reason = models.TextField()
    count = models.PositiveBigIntegerField(default=0)
    previous_week = models.PositiveBigIntegerField(default=0)
    new = models.BooleanField(default=False)
    over_threshold = models.BooleanField(default=False)
    needs_disposition = models.BooleanField(default=False)
    first_seen = models.DateTimeField(null=True, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    sample_keys = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["table", "-count", "reason"]
        constraints = [models.UniqueConstraint(fields=["review", "table", "reason"], name="one_item_per_table_reason")]

    def __str__(self) -> str:
        return f"{self.table}: {self.reason}"

    @property
    def disposed(self) -> bool:
        """A disposition of this item is done (uses prefetched ``dispositions`` when present)."""
        return any(d.state == Disposition.State.DONE for d in self.dispositions.all())


class Disposition(models.Model):
    """What a person decided for one item, and what came of it.

    ``release``/``discard``/``keep`` are actions on the item's table (``action``): the row is written
    ``pending`` with the request and becomes ``done`` when the action succeeded (``decided_at`` then, and
    ``counts`` = the rows, files and bytes the outcome reports) or ``failed`` when it ended otherwise (the
    action says why; the item may be decided again). ``escalate`` opens an incident (``incident``) and is
    ``done`` at once with the evidence in ``counts``. ``decided_by`` is the person who decided (the
    requester; an approver's decision is on the action). At most one live (pending or done) disposition of
    each kind per item.
    """

    class Kind(models.TextChoices):
        RELEASE = "release"
        DISCARD = "discard"
        KEEP = "keep"
        ESCALATE = "escalate"

    class State(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        FAILED = "failed"

    item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="dispositions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    note = models.TextField(blank=True)
    expires = models.DateField(null=True, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    action = models.ForeignKey(
        ActionRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="quarantine_dispositions"
    )
    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.SET_NULL, related_name="quarantine_dispositions"
    )
    counts = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["requested_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["item", "kind"],
                condition=models.Q(state__in=["pending", "done"]),
                name="one_live_disposition_per_item_kind",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} ({self.state})"

    def audit_state(self) -> dict[str, object]:
        return {"kind": self.kind, "state": self.state, "counts": self.counts, "note": self.note}


class ReviewSchedule(models.Model):
    """When reviews are created: every ``weekday`` (0 = Monday) at ``hour`` (UTC), when ``enabled``, for the
    quarantine sources of ``environment`` (None: every protected environment) whose config says
    ``weekly_review``. Data, edited by an admin; the migration creates Monday 06:00 for every protected
    environment."""

    weekday = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(6)], help_text="0 = Monday ... 6 = Sunday"
    )
    hour = models.PositiveSmallIntegerField(default=6, validators=[MaxValueValidator(23)], help_text="UTC")
    enabled = models.BooleanField(default=True)
    environment = models.ForeignKey(
        Environment,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="quarantine_schedules",
        help_text="empty: every protected (production) environment",
    )

    class Meta:
        ordering = ["weekday", "hour", "id"]

    def __str__(self) -> str:
        day = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")[self.weekday]
        where = self.environment.name if self.environment_id and self.environment else "production"
        return f"{day} {self.hour:02d}:00 UTC, {where}" + ("" if self.enabled else " (disabled)")

    def audit_state(self) -> dict[str, object]:
        return {
            "weekday": self.weekday,
            "hour": self.hour,
            "enabled": self.enabled,
            "environment": self.environment.name if self.environment_id and self.environment else None,
        }

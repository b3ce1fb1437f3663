"""The tamper-evident audit trail: append-only rows chained by SHA-256."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.audit.context import Channel


class AuditEvent(models.Model):
    """One audited change. Append-only: written in the transaction of the change it records.

    ``hash = sha256(prev_hash + canonical_json(fields))`` over every field but ``id`` and ``hash``, with
    ``seq`` contiguous from 1, so an edited, deleted or reordered row breaks the chain at that row. A
    trigger also rejects UPDATE, DELETE and TRUNCATE (migration 0002). Deleting a user leaves ``actor_id``
    as it was (no foreign key constraint, nothing nulled: the id is hashed); ``actor_name`` keeps who it was.
    """

    seq = models.BigIntegerField(unique=True)
    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150)
    channel = models.CharField(max_length=16, choices=Channel.CHOICES)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    event = models.CharField(max_length=64)  # indexed with seq: audit_event_idx
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=300)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        indexes = [
            models.Index(fields=["object_type", "object_id", "seq"], name="audit_object_idx"),
            # The audit page's filters in its order (newest first): a page of a rare event or of someone's
            # old events is one range scan, not a walk of the whole trail (bench/history_pages.py).
            models.Index(fields=["event", "seq"], name="audit_event_idx"),
            models.Index(fields=["actor_name", "seq"], name="audit_actor_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.event} {self.object_type}:{self.object_id} by {self.actor_name}"


class AuditChainHead(models.Model):
    """The single row holding the chain's tip. Writers lock it (SELECT ... FOR UPDATE) so concurrent
    transactions append one after another and cannot fork the chain; it also exposes truncation of the
    tail, since the head must match the last event. A trigger lets it move only forward, to an event that
    exists with that hash (migration 0005)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)

    def __str__(self) -> str:
        return f"audit head #{self.seq}"

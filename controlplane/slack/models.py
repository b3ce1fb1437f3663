"""Slack as a channel: who a Slack user is here, and the messages the control plane keeps up to date.

Slack is an interface like the web and the API: a button press goes through the same request service, policy,
idempotency and audit. These rows only map Slack's identities and message addresses onto the control plane's.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class SlackUserLink(models.Model):
    """A Slack user acting as a control-plane user. Made by an admin (``manage.py slack_link``), by the user
    on their profile page, or from a Slack profile's verified email that matches exactly one active user."""

    class Via(models.TextChoices):
        ADMIN = "admin"
        PROFILE = "profile"
        EMAIL = "email"

    slack_user_id = models.CharField(max_length=32, unique=True)
    slack_team_id = models.CharField(max_length=32, blank=True)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="slack_link")
    via = models.CharField(max_length=16, choices=Via.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.slack_user_id} = {self.user}"


class SlackPost(models.Model):
    """A message the control plane posted and updates in place (``chat.update``): an incident's message in its
    channel (progress goes to its thread), an approval request, a ``/runbook run`` preview. ``ts`` is empty
    until Slack has answered the post."""

    class Kind(models.TextChoices):
        INCIDENT = "incident"
        APPROVAL = "approval"
        PREVIEW = "preview"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    channel = models.CharField(max_length=80)
    ts = models.CharField(max_length=32, blank=True)
    incident = models.ForeignKey(
        "incidents.Incident", null=True, blank=True, on_delete=models.CASCADE, related_name="slack_posts"
    )
    action = models.ForeignKey(
        "actions.ActionRun", null=True, blank=True, on_delete=models.CASCADE, related_name="slack_posts"
    )
    # What the message stands for that the database holds nowhere else: for an incident's message the suggested
    # remediation's plan, computed once by a worker (``slack/receivers.py``); for a preview the pending request
    # its Confirm button makes (who asked from which Slack user, verb, target, params, reason).
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "ts"], condition=~models.Q(ts=""), name="slack_post_address_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} in {self.channel} at {self.ts or '(not posted yet)'}"


class SlackOutbox(models.Model):
    """One call to Slack waiting to be made, made, or given up: the outbound queue (``slack/outbound.py``).

    Rows of one ``queue`` (the channel as the message was addressed) are delivered one at a time in id order
    by a task holding that queue's lock, so a thread reply or an update always follows its parent's post. A
    rate limit (429) or a network error leaves the row pending with ``not_before`` set; a permanent refusal
    (``channel_not_found``, ``invalid_auth`` ...) marks it failed with Slack's error, and the queue moves on.
    """

    class Method(models.TextChoices):
        POST = "post"  # chat.postMessage; fills ``post.ts`` (and ``post.channel`` with Slack's channel id)
        UPDATE = "update"  # chat.update of ``post``
        EPHEMERAL = "ephemeral"  # chat.postEphemeral to ``body["user"]``
        RESPOND = "respond"  # a POST to an interaction's response_url (``body["url"]``)

    class State(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    queue = models.CharField(max_length=80)
    method = models.CharField(max_length=16, choices=Method.choices)
    post = models.ForeignKey(SlackPost, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    thread_of = models.ForeignKey(SlackPost, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    body = models.JSONField(default=dict)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    not_before = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "outbox message"
        verbose_name_plural = "outbox"
        indexes = [
            models.Index(fields=["queue", "id"], condition=models.Q(state="pending"), name="slack_outbox_pending_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.method} to {self.queue} ({self.state})"

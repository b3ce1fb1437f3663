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
    # A preview's pending request (who asked from which Slack user, verb, target, params, reason): what its
    # Confirm button requests. Empty for the other kinds.
    request = models.JSONField(default=dict, blank=True)
    incident = models.ForeignKey(
        "incidents.Incident", null=True, blank=True, on_delete=models.CASCADE, related_name="slack_posts"
    )
    action = models.ForeignKey(
        "actions.ActionRun", null=True, blank=True, on_delete=models.CASCADE, related_name="slack_posts"
    )
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

"""API tokens for bots: hashed, scoped, expiring."""

from __future__ import annotations

from django.conf import settings
from django.db import models

SCOPES = {
    "actions:read": "read actions, their plans, logs and approvals",
    "actions:write": "request and cancel actions, preview plans",
    "actions:approve": "approve or reject other people's actions",
    "catalog:read": "read targets, their verbs, checks and parameter schemas",
    "audit:read": "read the audit trail",
    "incidents:read": "read incidents and their timelines",
    "incidents:write": "acknowledge, mitigate, resolve and comment on incidents",
    "alerts:write": "send alerts (Airflow callbacks, Alertmanager, any bot) that open or update incidents",
    "runbooks:read": "read runbooks and runbook runs",
    "runbooks:write": "start runbook runs and advance their steps (the steps' own policy applies)",
    "quarantine:read": "read quarantine reviews, their items and dispositions (deciding takes actions:write)",
}


class ApiToken(models.Model):
    """A bearer token. Only its SHA-256 is stored; the clear token is shown once, when minted.

    Tokens are 256-bit random, so a fast hash is enough (no password-style stretching needed). The
    ``prefix`` is shown in lists so people can tell tokens apart. Scopes narrow what the user's role
    allows; they never widen it.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True)
    token_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}..., {self.user})"

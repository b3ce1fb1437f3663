"""The Slack outbox in the admin: what was sent, what waits (and until when), what Slack refused and why."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from controlplane.slack.models import SlackOutbox


@admin.register(SlackOutbox)
class SlackOutboxAdmin(admin.ModelAdmin):
    list_display = ("id", "queue", "method", "state", "attempts", "not_before", "error", "created_at", "sent_at")
    list_filter = ("state", "method")
    search_fields = ("queue", "error")
    ordering = ("-id",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SlackOutbox | None = None) -> bool:
        return False

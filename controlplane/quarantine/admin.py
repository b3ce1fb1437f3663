"""Quarantine reviews in the admin: the schedule is data an admin edits; reviews, items and dispositions
are records made by the review and disposition services (read-only here: changing them would bypass
their actions and audit trail)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from controlplane.quarantine.models import Disposition, QuarantineReview, ReviewItem, ReviewSchedule


@admin.register(ReviewSchedule)
class ReviewScheduleAdmin(admin.ModelAdmin):
    list_display = ("id", "weekday", "hour", "enabled", "environment")
    list_filter = ("enabled",)


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(QuarantineReview)
class QuarantineReviewAdmin(_ReadOnly):
    list_display = ("id", "target", "week_start", "week_end", "created_at", "completed_at")
    list_filter = ("target",)
    ordering = ("-week_end", "-id")


@admin.register(ReviewItem)
class ReviewItemAdmin(_ReadOnly):
    list_display = ("id", "review", "table", "reason", "count", "new", "over_threshold", "needs_disposition")
    search_fields = ("table", "reason")


@admin.register(Disposition)
class DispositionAdmin(_ReadOnly):
    list_display = ("id", "item", "kind", "state", "decided_by", "decided_at", "action", "incident")
    list_filter = ("kind", "state")

"""Quarantine reviews in the admin: the schedule is data an admin edits; reviews, items and dispositions
are records made by the review and disposition services (read-only here: changing them would bypass
their actions and audit trail)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from controlplane.quarantine import services
from controlplane.quarantine.models import Disposition, QuarantineReview, ReviewItem, ReviewSchedule


@admin.register(ReviewSchedule)
class ReviewScheduleAdmin(admin.ModelAdmin):
    """Schedules are data an admin edits; every change is audited through the services."""

    list_display = ("id", "weekday", "hour", "enabled", "environment")
    list_filter = ("enabled",)

    def save_model(self, request: HttpRequest, obj: ReviewSchedule, form: Any, change: bool) -> None:
        services.schedule_save(schedule=obj)

    def delete_model(self, request: HttpRequest, obj: ReviewSchedule) -> None:
        services.schedule_delete(schedule=obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for schedule in queryset:
            services.schedule_delete(schedule=schedule)


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

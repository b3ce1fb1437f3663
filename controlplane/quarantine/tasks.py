"""Celery beat entry points of quarantine reviews: each calls one service (the schedule is data:
``ReviewSchedule``; these tasks only ask whether something is due)."""

from __future__ import annotations

import logging

from celery import shared_task

from connectors.base import ConnectorError
from controlplane.errors import Conflict, InvalidInput, Unavailable
from controlplane.quarantine import services

log = logging.getLogger(__name__)


@shared_task(ignore_result=True, soft_time_limit=300)
def request_due_reviews() -> list[str]:
    """Request the weekly reviews whose schedule moment passed (idempotent per source and week)."""
    return [str(a.id) for a in services.reviews_schedule_due()]


@shared_task(ignore_result=True, soft_time_limit=600)
def open_breach_incidents() -> int:
    """Open incidents for yesterday's threshold breaches and escalation rules of every quarantine source."""
    opened = 0
    for source in services.quarantine_sources():
        try:
            opened += len(services.breaches_open_incidents(target=source))
        except (ConnectorError, InvalidInput, Unavailable) as exc:
            log.warning("quarantine breaches of %s not read: %s", source.key, exc)
    return opened


@shared_task(ignore_result=True, soft_time_limit=600)
def request_retention_cleanups() -> int:
    """Request the retention cleanup of every quarantine source (previewed; nothing to delete, no request)."""
    requested = 0
    for source in services.quarantine_sources():
        try:
            requested += services.cleanup_request(target=source) is not None
        except (Conflict, InvalidInput, Unavailable) as exc:
            log.warning("quarantine cleanup of %s not requested: %s", source.key, exc)
    return requested

"""Celery entry points of incidents: take ids, call one service."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from controlplane.incidents import services


@shared_task(ignore_result=True, soft_time_limit=60)
def attach_alert_log(incident_id: int, alert: dict[str, Any]) -> None:
    services.incident_attach_log(incident_id=incident_id, alert=alert)


# A pass that cannot finish within its interval is stopped (each connector's calls have their own timeouts):
# the next pass starts from the beginning, and passes never pile up behind a hung system.
@shared_task(ignore_result=True, time_limit=max(settings.CONTROLPLANE["WATCH_INTERVAL_SECONDS"], 60))
def watch_connections() -> None:
    services.connections_watch()

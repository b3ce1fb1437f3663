"""Celery entry points of incidents: take ids, call one service."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from controlplane.incidents import services


@shared_task(ignore_result=True, soft_time_limit=60)
def attach_alert_log(incident_id: int, alert: dict[str, Any]) -> None:
    services.incident_attach_log(incident_id=incident_id, alert=alert)

"""Periodic health checks of every connection (Celery beat)."""

from __future__ import annotations

from celery import shared_task

from controlplane.catalog.models import Connection
from controlplane.catalog.services import connection_check_health


@shared_task(ignore_result=True, soft_time_limit=120)
def check_connections_health() -> None:
    for connection in Connection.objects.select_related("environment"):
        connection_check_health(connection=connection)

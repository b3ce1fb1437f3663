"""Celery tasks of the runner: each takes an id and calls one service."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.utils import timezone

from controlplane.audit.context import Channel, change_context
from runbooks import services


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def advance_run(run_id: int) -> None:
    """Carry a run forward (checks, notifications, skipped steps) until a person or an action is needed."""
    with change_context(channel=Channel.RUNBOOK, actor_name="runbook runner"):
        services.run_advance(run_id=run_id)


@shared_task(ignore_result=True)
def resume_stalled_runs() -> Any:
    with change_context(channel=Channel.SCHEDULE, actor_name="runbook runner"):
        return services.runs_resume_stalled(now=timezone.now())

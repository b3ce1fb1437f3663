"""Celery entry points: take an id, call one service."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from controlplane.actions import reaper, runner

_LIMIT = settings.CONTROLPLANE["EXECUTE_TIMEOUT_SECONDS"]


# The soft limit raises inside the attempt, which records a clear timeout; the hard limit (a minute later)
# kills a child that ignores it, and the reaper then treats the action like any other lost attempt.
@shared_task(
    acks_late=True, reject_on_worker_lost=True, ignore_result=True, soft_time_limit=_LIMIT, time_limit=_LIMIT + 60
)
def execute_action(action_id: str, request_id: str = "") -> None:
    runner.action_execute(action_id=action_id, request_id=request_id)


@shared_task(ignore_result=True)
def reap_actions() -> None:
    reaper.actions_reap()

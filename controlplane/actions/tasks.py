"""Celery entry points: take an id, call one service."""

from __future__ import annotations

from celery import shared_task

from controlplane.actions import runner


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execute_action(action_id: str) -> None:
    runner.action_execute(action_id=action_id)


@shared_task(ignore_result=True)
def reap_actions() -> None:
    runner.actions_reap()

"""Celery entry points of the Slack app: take ids (or a queue's name), call one service."""

from __future__ import annotations

from celery import shared_task

from controlplane.slack import outbound, receivers


@shared_task(ignore_result=True, soft_time_limit=600)
def deliver_queue(queue: str) -> None:
    outbound.outbox_deliver(queue=queue)


@shared_task(ignore_result=True)
def kick_pending_queues() -> None:
    outbound.outbox_kick_pending()


@shared_task(ignore_result=True, soft_time_limit=120)
def plan_incident_remediation(post_id: int) -> None:
    receivers.incident_message_plan(post_id=post_id)

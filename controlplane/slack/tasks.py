"""Celery entry points of the Slack app: take ids, a queue's name or a press/command acknowledged already by
the endpoint (controlplane/slack/views.py), and call one service."""

from __future__ import annotations

from celery import shared_task

from controlplane.slack import commands, interactions, outbound, receivers
from controlplane.slack.inbound import Command, Press


@shared_task(ignore_result=True, soft_time_limit=600)
def deliver_queue(queue: str) -> None:
    outbound.outbox_deliver(queue=queue)


@shared_task(ignore_result=True)
def kick_pending_queues() -> None:
    outbound.outbox_kick_pending()


@shared_task(ignore_result=True, soft_time_limit=120)
def plan_incident_remediation(post_id: int, attempt: int = 1) -> None:
    if receivers.incident_message_plan(post_id=post_id) and attempt < receivers.PLAN_SETTLE_ATTEMPTS:
        plan_incident_remediation.apply_async(args=(post_id, attempt + 1), countdown=receivers.PLAN_SETTLE_SECONDS)


@shared_task(ignore_result=True)
def slack_press(press: dict[str, str]) -> None:
    interactions.press_handle(press=Press(**press))


@shared_task(ignore_result=True)
def slack_command(command: dict[str, str]) -> None:
    commands.command_handle(command=Command(**command))

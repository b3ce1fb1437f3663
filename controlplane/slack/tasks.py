"""Celery entry points of Slack's inbound side: one press or one ``/runbook`` command each, acknowledged
already by the endpoint (controlplane/slack/views.py); each calls one handler."""

from __future__ import annotations

from celery import shared_task

from controlplane.slack import commands, interactions
from controlplane.slack.inbound import Command, Press


@shared_task(ignore_result=True)
def slack_press(press: dict[str, str]) -> None:
    interactions.press_handle(press=Press(**press))


@shared_task(ignore_result=True)
def slack_command(command: dict[str, str]) -> None:
    commands.command_handle(command=Command(**command))

"""``/runbook``: status, run (preview first, then Confirm / Cancel), link, help.

Help is answered by the endpoint itself; the rest runs in the worker (controlplane/slack/tasks.py) as the
linked user, through the same selectors and services as the web, and answers through the response_url.
``run`` computes the plan and answers with it and Confirm / Cancel buttons; nothing runs before Confirm
(controlplane/slack/interactions.py), which requests the action with the preview's idempotency key.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import shlex
from typing import Any

from django.urls import reverse

from controlplane import access
from controlplane.actions import policy
from controlplane.actions import services as action_services
from controlplane.audit.context import Channel, change_context
from controlplane.catalog.models import Target
from controlplane.errors import InvalidInput, NotFound, ServiceError
from controlplane.incidents import selectors as incident_selectors
from controlplane.slack import blocks, identity, outbound
from controlplane.slack.inbound import Command
from controlplane.slack.interactions import acting_user, link_url, reply
from controlplane.slack.models import SlackPost

log = logging.getLogger(__name__)

HELP = (
    "*`/runbook` commands*\n"
    "• `/runbook status`: the open incidents\n"
    "• `/runbook status <incident>`: one incident (`12` or `INC-12`) with its last actions\n"
    '• `/runbook run <verb> <target> [key=value ...] [reason="why"]`: preview an action on a catalog '
    "target, then Confirm or Cancel (nothing runs before Confirm)\n"
    "• `/runbook link <code>`: link your Slack account (the code is on your profile page)\n"
    "• `/runbook help`: this list"
)
LIST_LIMIT = 20
LAST_ACTIONS = 5
_INCIDENT = re.compile(r"^(?:INC-)?(\d{1,12})$", re.I)


def is_help(text: str) -> bool:
    return text.strip().lower() in ("", "help")


def _status(user: Any, args: list[str]) -> str:
    access.require_role(user, "viewer", "reading incidents")
    if not args:
        rows = list(incident_selectors.incident_list({"status": "open"})[:LIST_LIMIT])
        if not rows:
            return "No open incidents."
        lines = [f"*Open incidents* ({len(rows)}{'+' if len(rows) == LIST_LIMIT else ''})"]
        for incident in rows:
            url = link_url(reverse("web:incident", args=[incident.pk]))
            lines.append(f"• <{url}|INC-{incident.pk}> [{incident.severity}] {incident.status}: {incident.title}")
        return "\n".join(lines)
    match = _INCIDENT.match(args[0])
    if match is None or len(args) > 1:
        raise InvalidInput(f"`status` takes one incident number (`12` or `INC-12`), not {' '.join(args)!r}")
    incident = incident_selectors.incident_get(int(match.group(1)))
    url = link_url(reverse("web:incident", args=[incident.pk]))
    lines = [f"*<{url}|INC-{incident.pk}>* [{incident.severity}] {incident.status}: {incident.title}"]
    recent = incident_selectors.incident_actions_recent(incident, limit=LAST_ACTIONS)
    if not recent.actions:
        lines.append("No actions yet.")
    for action in reversed(recent.actions):
        action_url = link_url(reverse("web:action", args=[action.id]))
        lines.append(
            f"• <{action_url}|{action.verb}> on `{action.target.key}`: {action.state} "
            f"(by {action.requested_by.get_username()}, {action.channel})"
        )
    return "\n".join(lines)


def _value(raw: str) -> Any:
    """A parameter's value: JSON when it reads as JSON (numbers, true/false, lists), text otherwise."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_run(args: list[str]) -> tuple[str, str, dict[str, Any], str]:
    """``<verb> <target> [key=value ...]`` into verb, target key, params and reason (``reason=``)."""
    if len(args) < 2:
        raise InvalidInput("usage: `/runbook run <verb> <target> [key=value ...]`")
    verb, target, params, reason = args[0], args[1], {}, ""
    for pair in args[2:]:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise InvalidInput(f"{pair!r} is not key=value")
        if name == "reason":
            reason = raw
        else:
            params[name] = _value(raw)
    return verb, target, params, reason


def _unknown_target(key: str) -> InvalidInput:
    keys = list(Target.objects.values_list("key", flat=True))
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.7)
    hint = f"; did you mean {', '.join(f'`{k}`' for k in close)}?" if close else "; see the Targets page"
    return InvalidInput(f"no catalog target `{key}`{hint}")


def _run(user: Any, command: Command, args: list[str]) -> dict[str, Any]:
    verb, target_key, params, reason = parse_run(args)
    try:
        prepared = action_services.action_prepare(actor=user, verb=verb, target_key=target_key, params=params)
    except NotFound:
        raise _unknown_target(target_key) from None
    plan = prepared.plan
    if plan.requires_consent:
        raise InvalidInput(f"this {verb} needs explicit consent: {plan.consent_reason}")
    approval = policy.approval_needed(environment=prepared.target.environment, plan=plan)
    post = SlackPost.objects.create(
        kind=SlackPost.Kind.PREVIEW,
        channel=command.channel_id[:80],
        data={
            "slack_user": command.user_id,
            "verb": verb,
            "target": prepared.target.key,
            "params": params,
            "reason": reason or f"/runbook run from Slack by {user.get_username()}",
        },
    )
    return {
        "response_type": "ephemeral",
        "text": f"Preview: {verb} on {prepared.target.key}: {plan.summary}",
        "blocks": blocks.preview_blocks(
            preview_id=post.pk, verb=verb, target=prepared.target.key, plan=plan, approval=approval.reason
        ),
    }


def command_handle(*, command: Command) -> None:
    """Do what ``/runbook <text>`` asks and answer the person; never raises for a refusal."""
    try:
        args = shlex.split(command.text)
    except ValueError:
        reply(command.response_url, f"Could not read `{command.text[:200]}`: unbalanced quotes.")
        return
    sub, rest = (args[0].lower(), args[1:]) if args else ("help", [])
    if sub == "link":
        with change_context(channel=Channel.SLACK, actor_name=f"slack:{command.user_id}"):
            try:
                if len(rest) != 1:
                    raise InvalidInput("usage: `/runbook link <code>` (the code is on your profile page)")
                link = identity.slack_link_code_redeem(
                    code=rest[0], slack_user_id=command.user_id, team_id=command.team_id
                )
                text = f"Linked: you act here as {link.user.get_username()}."
            except ServiceError as exc:
                text = f":x: {exc.message}"
        reply(command.response_url, text)
        return
    if sub not in ("status", "run"):
        reply(command.response_url, f"Unknown `/runbook {sub[:40]}`.\n{HELP}")
        return
    user = acting_user(
        slack_user_id=command.user_id,
        team_id=command.team_id,
        request_id=command.request_id,
        response_url=command.response_url,
    )
    if user is None:
        return
    with change_context(channel=Channel.SLACK, user=user, request_id=command.request_id or None):
        try:
            if sub == "status":
                reply(command.response_url, _status(user, rest))
            else:
                outbound.respond(command.response_url, _run(user, command, rest))
        except ServiceError as exc:
            reply(command.response_url, f":x: {exc.message}")
        except Exception:
            log.exception("/runbook %s failed", sub)
            reply(command.response_url, f"Something failed on our side (request {command.request_id or '-'}).")

"""What a button press does, in the worker after the endpoint has acknowledged it.

The Slack user is resolved to a control-plane user (controlplane/slack/identity.py); an unlinked user is
told how to link and nothing runs. The press then calls the same service as the web, inside
``change_context(channel="slack", user=...)``: the same role checks, two-person rule, idempotency and audit.
Whatever the service answers (done, or refused with its message: the role needed, the active action, a bad
parameter) goes back to the person alone, through the press's response_url.

A launch's idempotency key is the message and the action it offers (``slack:<channel>:<ts>:<action_id>:``
and a digest of the button's value, which tells apart two launches offered by one message): Slack's retries
and double clicks launch one action, and pressing it again later answers with that action.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from controlplane.actions import selectors as action_selectors
from controlplane.actions import services as action_services
from controlplane.actions.models import ActionRun
from controlplane.audit.context import Channel, change_context
from controlplane.errors import Conflict, InvalidInput, NotFound, ServiceError
from controlplane.incidents import services as incident_services
from controlplane.incidents.models import Incident
from controlplane.slack import identity, outbound
from controlplane.slack.inbound import Press
from controlplane.slack.models import SlackPost
from runbooks import services as runbook_services

log = logging.getLogger(__name__)

PREVIEW_TTL = timedelta(minutes=15)
Answer = tuple[str, bool]  # the text for the person, and whether it replaces the message pressed


def link_url(path: str) -> str:
    return settings.SLACK["PUBLIC_URL"].rstrip("/") + path


def reply(response_url: str, text: str, *, replace: bool = False) -> None:
    """Answer the person who pressed or typed: ephemeral, or replacing the (ephemeral) message pressed."""
    body: dict[str, Any] = {"response_type": "ephemeral", "text": text, "replace_original": replace}
    outbound.respond(response_url, body)


def how_to_link(slack_user_id: str) -> str:
    return (
        f"Your Slack account ({slack_user_id}) is not linked to a control-plane user, so nothing was done. "
        f"Get a link code on your profile page ({link_url(reverse('slack:profile'))}) and send "
        f"`/runbook link <code>` here, or ask an admin to run `manage.py slack_link <login> {slack_user_id}`."
    )


def acting_user(*, slack_user_id: str, team_id: str, request_id: str, response_url: str) -> Any | None:
    """The user the Slack user acts as, or None after telling them how to link."""
    with change_context(channel=Channel.SLACK, actor_name=f"slack:{slack_user_id}", request_id=request_id or None):
        user = identity.slack_user_resolve(slack_user_id=slack_user_id, team_id=team_id)
    if user is None:
        reply(response_url, how_to_link(slack_user_id))
    return user


def _action_line(action: ActionRun) -> str:
    url = link_url(reverse("web:action", args=[action.id]))
    return f"<{url}|action {str(action.id)[:8]}> ({action.verb} on `{action.target.key}`, {action.state})"


def _int(value: dict[str, Any], name: str) -> int:
    raw = value.get(name)
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise InvalidInput(f"this button carries no valid {name!r}")
    return raw


def _incident(value: dict[str, Any]) -> Incident | None:
    if value.get("incident") is None:
        return None
    incident = Incident.objects.filter(pk=_int(value, "incident")).first()
    if incident is None:
        raise NotFound(f"no incident {value['incident']}")
    return incident


def _ack(user: Any, press: Press, value: dict[str, Any]) -> Answer:
    incident = incident_services.incident_acknowledge(actor=user, incident_id=_int(value, "incident"))
    return f"You acknowledged INC-{incident.pk}.", False


def _runbook_start(user: Any, press: Press, value: dict[str, Any]) -> Answer:
    run = runbook_services.run_start(
        actor=user, runbook=str(value.get("runbook", "")), params={}, incident=_incident(value)
    )
    url = link_url(reverse("runbooks:run", args=[run.pk]))
    return f"Started runbook {run.runbook_version.runbook.slug}: <{url}|follow it here>.", False


def launch_key(press: Press) -> str:
    digest = hashlib.sha256(press.value.encode()).hexdigest()[:12]
    return f"slack:{press.channel_id}:{press.message_ts}:{press.action_id}:{digest}"


def _launch(user: Any, press: Press, value: dict[str, Any]) -> Answer:
    incident = _incident(value)
    params = value.get("params") or {}
    where = f" for INC-{incident.pk}" if incident is not None else ""
    result = action_services.action_request(
        actor=user,
        verb=str(value.get("verb", "")),
        target_key=str(value.get("target", "")),
        params=params,
        reason=f"launched from Slack{where}",
        idempotency_key=launch_key(press),
        incident=incident,
    )
    if not result.created:
        return f"This button already launched {_action_line(result.action)}.", False
    return f"Requested {_action_line(result.action)}.", False


def _decided_answer(action_id: Any, exc: Conflict) -> str:
    """A decision that lost to another (from the web, or another approver): say who decided, and where."""
    action = action_selectors.action_get(action_id)
    decisions = action_selectors.action_approvals(action)
    if decisions:
        last = decisions[-1]
        return f"Already {last.decision} by {last.approver.get_username()} ({last.channel}); {_action_line(action)}."
    return exc.message


def _decide(decide: Callable[..., ActionRun], verb: str) -> Callable[[Any, Press, dict[str, Any]], Answer]:
    def handle(user: Any, press: Press, value: dict[str, Any]) -> Answer:
        action_id = str(value.get("action", ""))
        try:
            action = decide(actor=user, action_id=action_id, comment=f"{verb} from Slack")
        except Conflict as exc:
            return _decided_answer(action_id, exc), False
        return f"You {verb} {_action_line(action)}.", False

    return handle


def _preview(press: Press, value: dict[str, Any]) -> SlackPost:
    post = (
        SlackPost.objects.select_for_update(of=("self",))
        .filter(pk=_int(value, "preview"), kind=SlackPost.Kind.PREVIEW)
        .select_related("action__target")
        .first()
    )
    if post is None:
        raise NotFound("this preview was cancelled; run `/runbook run ...` again")
    if post.data.get("slack_user") != press.user_id:
        raise InvalidInput("only the person who asked for this preview can confirm or cancel it")
    return post


def _confirm(user: Any, press: Press, value: dict[str, Any]) -> Answer:
    with transaction.atomic():
        post = _preview(press, value)
        if post.action is not None:
            return f"Already confirmed: {_action_line(post.action)}.", True
        if timezone.now() - post.created_at > PREVIEW_TTL:
            raise InvalidInput("this preview is more than 15 minutes old; run `/runbook run ...` again")
        asked = post.data
        result = action_services.action_request(
            actor=user,
            verb=asked["verb"],
            target_key=asked["target"],
            params=asked["params"],
            reason=asked["reason"],
            idempotency_key=f"slack:preview:{post.pk}",
            incident=post.incident,
        )
        post.action = result.action
        post.save(update_fields=["action", "updated_at"])
    return f"Confirmed: {_action_line(result.action)}.", True


def _cancel(user: Any, press: Press, value: dict[str, Any]) -> Answer:
    with transaction.atomic():
        post = _preview(press, value)
        if post.action is not None:
            return f"Already confirmed: {_action_line(post.action)}; cancel it on its page.", False
        post.delete()
    return "Cancelled; nothing ran.", True


HANDLERS: dict[str, Callable[[Any, Press, dict[str, Any]], Answer]] = {
    "incident.ack": _ack,
    "runbook.start": _runbook_start,
    "action.launch": _launch,
    "action.approve": _decide(action_services.action_approve, "approved"),
    "action.reject": _decide(action_services.action_reject, "rejected"),
    "preview.confirm": _confirm,
    "preview.cancel": _cancel,
}


def press_handle(*, press: Press) -> None:
    """Do what the press asks as the linked user and answer the person; never raises for a refusal."""
    handler = HANDLERS.get(press.action_id)
    if handler is None:
        reply(press.response_url, f"This button ({press.action_id[:60]}) is not one the control plane offers.")
        return
    user = acting_user(
        slack_user_id=press.user_id, team_id=press.team_id, request_id=press.request_id, response_url=press.response_url
    )
    if user is None:
        return
    replace = False
    with change_context(channel=Channel.SLACK, user=user, request_id=press.request_id or None):
        try:
            value = json.loads(press.value or "{}")
            if not isinstance(value, dict):
                raise InvalidInput("this button carries no valid value")
            text, replace = handler(user, press, value)
        except json.JSONDecodeError:
            text = "This button carries no valid value."
        except ServiceError as exc:
            text = f"Refused: {exc.message}"
        except Exception:  # the person must hear something; the log has the rest under the request id
            log.exception("the Slack press %s failed", press.action_id)
            where = press.request_id or "-"
            text = f"Something failed on our side (request {where}); check the web UI before trying again."
    reply(press.response_url, text, replace=replace)

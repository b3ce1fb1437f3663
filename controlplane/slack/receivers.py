"""What Slack is told, and when: incidents' messages, their threads, approval requests.

Connected in ``SlackConfig.ready`` to the signals of ``incidents/signals.py`` and ``actions/signals.py``. Each
acts once the change committed (a signal sent inside its transaction registers the work for the commit) and
only enqueues through ``slack/outbound.py``; every error is logged and swallowed, so Slack never fails nor
delays the path that sent the signal. With Slack off (no bot token reference) they return before any query.

- An incident opens: one message in its channel (its pipeline's ``slack_channel``, else its environment's,
  else ``SLACK["DEFAULT_CHANNEL"]``); a worker then computes the suggested remediation's plan and the message
  is updated with the count on the button and the plan in its confirm dialog.
- The message's thread follows the incident's actions: requested, approved or rejected, running, progress
  (at most one line per quarter and per ``PROGRESS_MIN_SECONDS``), and the end with its verdict.
- The message itself is updated in place (``chat.update``) when the failed try's log arrives, when an action
  of the incident is verified, and when the incident's status changes (acknowledged, mitigated, resolved):
  the channel shows the current state at a glance.
- An action needing approval: a direct message to each approver with a Slack link (or one message in
  ``SLACK["APPROVALS_CHANNEL"]``) with Approve / Reject; every copy is updated when someone decides, and
  again when the action ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q

from controlplane.actions.models import ActionRun, ActionState, Approval
from controlplane.errors import ServiceError
from controlplane.incidents.models import Incident
from controlplane.slack import blocks, outbound
from controlplane.slack.client import slack_enabled
from controlplane.slack.models import SlackPost

log = logging.getLogger(__name__)

PROGRESS_MIN_SECONDS = 10.0


def _safely(what: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        what(*args, **kwargs)
    except Exception:
        log.exception("Slack: %s failed; the change it reports stands", getattr(what, "__name__", what))


# ---------------------------------------------------------------------------------------- incidents


def incident_channel(incident: Incident) -> str:
    """Where an incident is posted: its pipeline's channel, else its environment's (the pipeline's, or its
    first target's), else the default channel."""
    pipeline = incident.pipeline
    if pipeline is not None and pipeline.slack_channel:
        return pipeline.slack_channel
    environment = _environment(incident)
    if environment is not None and environment.slack_channel:
        return str(environment.slack_channel)
    return str(settings.SLACK["DEFAULT_CHANNEL"])


def _environment(incident: Incident) -> Any:
    if incident.pipeline is not None:
        return incident.pipeline.environment
    target = incident.targets.select_related("connection__environment").order_by("key").first()
    return target.connection.environment if target is not None else None


def _incident(incident_id: int) -> Incident | None:
    return Incident.objects.select_related("pipeline__environment").filter(pk=incident_id).first()


def _incident_post(incident_id: Any) -> SlackPost | None:
    return SlackPost.objects.filter(kind=SlackPost.Kind.INCIDENT, incident_id=incident_id).order_by("id").first()


def suggested_remediation(incident: Incident) -> dict[str, Any] | None:
    """The verb the message offers: the first the incident's targets offer with parameters taken from the
    alert (``clear`` of the failed task in its run, for an Airflow failure), else the first they offer."""
    from controlplane.incidents.selectors import suggested_actions

    offered = suggested_actions(incident)
    return next((s for s in offered if s["params"]), offered[0] if offered else None)


def _suggested_runbook(incident: Incident) -> Any:
    from runbooks.selectors import runbooks_for_incident

    fits = runbooks_for_incident(incident)
    return fits[0] if fits else None


def incident_view(incident: Incident, post: SlackPost | None) -> blocks.IncidentView:
    """What the incident's message shows now (with the plan its post keeps, if computed)."""
    from controlplane.incidents.selectors import incident_log_url

    details = incident.details or {}
    environment = _environment(incident)
    runbook = _suggested_runbook(incident)
    remediation = None
    suggestion = suggested_remediation(incident) if incident.status != Incident.Status.RESOLVED else None
    if suggestion is not None:
        plan = (post.data if post is not None else {}).get("plan") or {}
        remediation = blocks.Remediation(
            verb=suggestion["verb"],
            target=suggestion["target"],
            params=suggestion["params"],
            plan_summary=plan.get("summary"),
            touches=plan.get("touches"),
            plan_error=plan.get("error", ""),
        )
    latest = ActionRun.objects.select_related("target").filter(incident=incident).order_by("-requested_at").first()
    dag, task = details.get("dag_id"), details.get("task_id")
    return blocks.IncidentView(
        id=incident.pk,
        title=incident.title,
        severity=incident.severity,
        status=incident.status,
        source=incident.source,
        summary=incident.summary,
        pipeline=incident.pipeline.name if incident.pipeline else str(dag or ""),
        environment=environment.name if environment is not None else "",
        first_seen=incident.created_at,
        repeats=incident.alert_count,
        task=f"{dag}.{task}" if dag and task else "",
        run=str(details.get("run_id") or ""),
        log_excerpt=str(details.get("log_excerpt") or ""),
        log_url=incident_log_url(incident),
        runbook_slug=runbook.runbook.slug if runbook is not None else None,
        runbook_title=runbook.title if runbook is not None else "",
        remediation=remediation,
        latest_action=blocks.action_outcome(latest) if latest is not None else "",
    )


def incident_announce(*, incident_id: int) -> SlackPost | None:
    """Post a new incident's message in its channel, then have a worker compute the plan of its suggested
    remediation (it calls the target system: never on the alert's path)."""
    incident = _incident(incident_id)
    if incident is None or _incident_post(incident_id) is not None:
        return None
    with transaction.atomic():
        post = SlackPost(kind=SlackPost.Kind.INCIDENT, channel=incident_channel(incident), incident=incident)
        text, payload = blocks.incident_message(incident_view(incident, None))
        outbound.post(post.channel, text, payload, post=post)
        if suggested_remediation(incident) is not None:
            post_id = post.pk
            transaction.on_commit(lambda: _safely(_plan_later, post_id))
    return post


#: a settling plan is computed again every PLAN_SETTLE_SECONDS, at most PLAN_SETTLE_ATTEMPTS times in all
PLAN_SETTLE_SECONDS = 5
PLAN_SETTLE_ATTEMPTS = 24


def _plan_later(post_id: int) -> None:
    from controlplane.slack.tasks import plan_incident_remediation

    plan_incident_remediation.apply_async(args=(post_id,))


def incident_message_plan(*, post_id: int) -> bool:
    """Compute the suggested remediation's plan for an incident's message, keep it on the post and update the
    message: the button names what it touches, its confirm dialog the plan. A plan that cannot be computed
    leaves the button without a count and says so in the dialog; a press plans again. True when the plan
    is still settling (the failed run is still going): the caller plans again a little later."""
    from controlplane.actions.services import action_plan

    post = SlackPost.objects.select_related("incident").filter(pk=post_id).first()
    if post is None or post.incident is None:
        return False
    suggestion = suggested_remediation(post.incident)
    if suggestion is None:
        return False
    settling = False
    try:
        prepared = action_plan(verb=suggestion["verb"], target_key=suggestion["target"], params=suggestion["params"])
        plan: dict[str, Any] = {"summary": prepared.plan.summary, "touches": len(prepared.plan.touches)}
        settling = prepared.plan.settling
    except ServiceError as exc:
        plan = {"error": exc.message}
    with transaction.atomic():  # the plan and the update it causes are queued together
        SlackPost.objects.filter(pk=post.pk).update(data={**post.data, "plan": plan})
        incident_message_refresh(incident_id=post.incident.pk)
    return settling


def incident_message_refresh(*, incident_id: int) -> None:
    """Update the incident's message to what it shows now. The post is locked while the message is read and
    queued, so two refreshes queue in the order they read: the last one queued shows the latest state."""
    with transaction.atomic():
        first = _incident_post(incident_id)
        if first is None:
            return
        post = SlackPost.objects.select_for_update().get(pk=first.pk)
        incident = _incident(incident_id)
        if incident is None:
            return
        text, payload = blocks.incident_message(incident_view(incident, post))
        outbound.update(post, text, payload)


def _thread(incident_id: Any, message: tuple[str, blocks.Blocks]) -> None:
    post = _incident_post(incident_id) if incident_id is not None else None
    if post is not None:
        outbound.post(post.channel, message[0], message[1], thread_of=post)


def on_incident_opened(sender: Any, incident_id: int, **kwargs: Any) -> None:
    """In the intake's transaction: only register the message for its commit."""
    if slack_enabled():
        transaction.on_commit(lambda: _safely(incident_announce, incident_id=incident_id))


def on_incident_changed(sender: Any, incident_id: int, change: str, **kwargs: Any) -> None:
    """In the change's transaction: register the thread line (a status change) and the update for its commit."""
    if not slack_enabled():
        return

    def tell() -> None:
        if change == "status":
            status_line = blocks.incident_status_line(kwargs.get("status", ""), kwargs.get("actor", ""))
            _safely(_thread, incident_id, status_line)
        _safely(incident_message_refresh, incident_id=incident_id)

    transaction.on_commit(tell)


# ------------------------------------------------------------------------------------------ actions


def _action(action_id: Any) -> ActionRun | None:
    return ActionRun.objects.select_related("target", "environment").filter(id=action_id).first()


def on_action_requested(sender: Any, action: ActionRun, requester: str, **kwargs: Any) -> None:
    """In the request's transaction: only register the notice for its commit."""
    if not slack_enabled() or (action.incident_id is None and not action.requires_approval):
        return
    action_id = action.id
    transaction.on_commit(lambda: _safely(action_requested_notify, action_id=action_id, requester=requester))


def action_requested_notify(*, action_id: Any, requester: str) -> None:
    action = _action(action_id)
    if action is None:
        return
    if action.incident_id is not None:
        _thread(action.incident_id, blocks.action_requested_line(action, requester))
    if action.requires_approval and action.state == ActionState.AWAITING_APPROVAL:
        approval_requests_post(action=action, requester=requester)


def on_action_decided(sender: Any, action_id: Any, decision: str, approver: str, comment: str = "", **kw: Any) -> None:
    if not slack_enabled():
        return
    action = _action(action_id)
    if action is None:
        return
    _safely(_thread, action.incident_id, blocks.action_decided_line(action, decision, approver, comment))
    _safely(approval_requests_update, action=action)


def on_action_started(sender: Any, action_id: Any, incident_id: Any, attempt: int, **kwargs: Any) -> None:
    if incident_id is None or not slack_enabled():
        return
    action = _action(action_id)
    if action is not None:
        _safely(_thread, incident_id, blocks.action_started_line(action, attempt))


# The last progress line said per action in this process (the attempt's progress is reported by one worker):
# when, and which quarter. Bounded: an entry is dropped at the action's end, or when over 1000.
_progress_said: OrderedDict[str, tuple[float, int]] = OrderedDict()
_progress_lock = threading.Lock()


def _progress_due(action_id: str, done: int, total: int) -> bool:
    """A new quarter (25, 50, 75 %) reached, at most one line per ``PROGRESS_MIN_SECONDS`` per action; 100 %
    is left to the verdict line that follows."""
    if total <= 0:
        return False
    quarter = min(4, (4 * done) // total)
    now = time.monotonic()
    with _progress_lock:
        said_at, said = _progress_said.get(action_id, (0.0, 0))
        if quarter >= 4 or quarter <= said or now - said_at < PROGRESS_MIN_SECONDS:
            return False
        _progress_said[action_id] = (now, quarter)
        while len(_progress_said) > 1000:
            _progress_said.popitem(last=False)
    return True


def on_action_progress(sender: Any, action_id: Any, incident_id: Any, done: int, total: int, **kwargs: Any) -> None:
    if incident_id is None or not slack_enabled() or not _progress_due(str(action_id), done, total):
        return
    action = _action(action_id)
    if action is not None:
        _safely(_thread, incident_id, blocks.action_progress_line(action, done, total))


def on_action_finished(
    sender: Any, action_id: Any, incident_id: Any, requires_approval: bool = False, **kwargs: Any
) -> None:
    """The verdict in the incident's thread, the incident's message updated when the action was verified,
    and the approval requests updated (an action can end while waiting: expired, cancelled)."""
    with _progress_lock:
        _progress_said.pop(str(action_id), None)
    if not slack_enabled() or (incident_id is None and not requires_approval):
        return
    action = _action(action_id)
    if action is None:
        return
    if incident_id is not None:
        _safely(_thread, incident_id, blocks.action_finished_line(action))
        if action.state == ActionState.SUCCEEDED:
            _safely(incident_message_refresh, incident_id=incident_id)
    if requires_approval:
        _safely(approval_requests_update, action=action)


# ---------------------------------------------------------------------------------------- approvals


def approvers_on_slack(action: ActionRun) -> list[Any]:
    """Who may approve ``action`` and has a Slack link: active approvers and admins, not its requester."""
    User = get_user_model()
    return list(
        User.objects.filter(is_active=True, slack_link__isnull=False)
        .filter(Q(is_superuser=True) | Q(groups__name__in=["approver", "admin"]))
        .exclude(pk=action.requested_by_id)
        .select_related("slack_link")
        .distinct()
        .order_by("pk")
    )


def approval_requests_post(*, action: ActionRun, requester: str) -> list[SlackPost]:
    """Ask for a decision: one message in ``SLACK["APPROVALS_CHANNEL"]`` if set, else a direct message to
    each approver with a Slack link."""
    channel = settings.SLACK["APPROVALS_CHANNEL"]
    channels = [channel] if channel else [user.slack_link.slack_user_id for user in approvers_on_slack(action)]
    if not channels:
        log.info("action %s awaits approval; no approver has a Slack link and no approvals channel is set", action.id)
    text, payload = blocks.approval_request(action, requester)
    posts = []
    for where in channels:
        post = SlackPost(kind=SlackPost.Kind.APPROVAL, channel=where, action=action, incident_id=action.incident_id)
        outbound.post(where, text, payload, post=post)
        posts.append(post)
    return posts


def _verdict(action: ActionRun) -> str:
    decided = list(Approval.objects.select_related("approver").filter(action=action).order_by("decided_at"))
    said = [
        f"{':thumbsup:' if a.decision == Approval.Decision.APPROVED else blocks.ACTION_EMOJI['rejected']} "
        f"{a.decision.capitalize()} by *{blocks.escape(a.approver.get_username())}*"
        + (f": {blocks.escape(a.comment)}" if a.comment else "")
        for a in decided
    ]
    if not decided or action.state not in (ActionState.QUEUED, ActionState.RUNNING, ActionState.REJECTED):
        said.append(blocks.action_outcome(action))
    return "\n".join(said)


def approval_requests_update(*, action: ActionRun) -> None:
    """Every copy of the action's approval request shows the decision (and the end, once there is one)."""
    posts = list(SlackPost.objects.filter(kind=SlackPost.Kind.APPROVAL, action=action).order_by("id"))
    if not posts:
        return
    text, payload = blocks.approval_decided(action, _verdict(action))
    for post in posts:
        outbound.update(post, text, payload)

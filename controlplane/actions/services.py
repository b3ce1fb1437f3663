"""The action path: request, approve, reject, cancel. One path for every channel.

Web views, DRF views, Slack handlers and the runbook runner all call these functions; none of them knows
which interface called. Every state change writes its AuditEvent in the same transaction. Whoever follows
actions (incident timelines, runbook steps) subscribes to ``controlplane/actions/signals.py``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from pydantic import BaseModel, ValidationError

from connectors.base import ConnectorError, Plan, Verb
from connectors.registry import get_connector_class
from controlplane import access
from controlplane.actions import policy, signals
from controlplane.actions.lifecycle import action_expire, announce_finished_on_commit, dispatch_on_commit
from controlplane.actions.models import HOLDS_TARGET, ActionRun, ActionState, Approval
from controlplane.audit import context
from controlplane.audit.services import AuditEntry, audit_record, audit_record_many, canonical_json
from controlplane.catalog.models import Target
from controlplane.catalog.selectors import target_get
from controlplane.catalog.services import connector_for, pydantic_message, target_ref
from controlplane.configcache import ConfigCache
from controlplane.errors import Conflict, IdempotencyMismatch, InvalidInput, NotFound, Unavailable

if TYPE_CHECKING:
    from controlplane.incidents.models import Incident

# The authenticated person (or bot's user) acting: request.user from any interface.
User = Any

MAX_REASON = 2000

# Targets with their connection and environment, per process: read by every request, changed rarely; any
# change to them invalidates every process's cache (controlplane/catalog/receivers.py).
_targets: ConfigCache[Target] = ConfigCache()


@dataclass(frozen=True)
class ActionRequestResult:
    action: ActionRun
    created: bool


@dataclass(frozen=True)
class PreparedRequest:
    """A validated request: the catalog target, the verb, typed params and the computed plan."""

    target: Target
    verb: Verb[Any, Any]
    params: BaseModel
    plan: Plan


def request_fingerprint(*, verb: str, target_key: str, params: dict[str, Any], reason: str) -> str:
    body = {"verb": verb, "target": target_key, "params": params, "reason": reason}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def _get_target(target_key: str) -> Target:
    if not isinstance(target_key, str) or not target_key:
        raise InvalidInput("'target' must be a catalog target key")
    target = _targets.get(target_key, lambda: target_get(target_key))  # NotFound from the loader is not cached
    assert target is not None  # target_get raises rather than answer None
    return target


def _verb_for(target: Target, verb_name: str) -> Verb[Any, Any]:
    try:
        connector_cls = get_connector_class(target.connection.kind)
    except ConnectorError as exc:
        raise Unavailable(f"{target.connection.name}: {exc.message}") from None
    verb_cls = connector_cls.verb_class(verb_name) if isinstance(verb_name, str) else None
    offered = [v.name for v in connector_cls.verbs if target.kind in v.target_kinds]
    if verb_cls is None or target.kind not in verb_cls.target_kinds:
        raise InvalidInput(
            f"target {target.key} ({target.kind}) does not offer verb {verb_name!r}; it offers {offered}",
            details={"offered_verbs": offered},
        )
    try:
        connector = connector_for(target.connection)
    except ConnectorError as exc:  # a secret reference not set where this process runs, a bad config
        raise Unavailable(f"cannot reach {target.connection.name}: {exc.message}") from None
    return verb_cls(connector)


def _validate_params(verb: Verb[Any, Any], params: Any) -> BaseModel:
    if not isinstance(params, dict):
        raise InvalidInput("'params' must be a JSON object")
    try:
        return verb.params_model.model_validate(params)
    except ValidationError as exc:
        errors = [{"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]
        raise InvalidInput(
            f"invalid params for {verb.name}: {pydantic_message(exc)}", details={"errors": errors}
        ) from None


def _plan(verb: Verb[Any, Any], target: Target, params: BaseModel) -> Plan:
    try:
        return verb.plan(target_ref(target), params)
    except ConnectorError as exc:
        if exc.transient:
            raise Unavailable(
                f"could not compute the plan, {target.connection.name} did not answer: {exc.message}"
            ) from None
        raise InvalidInput(f"cannot plan {verb.name} on {target.key}: {exc.message}") from None


def action_prepare(*, actor: User, verb: str, target_key: str, params: Any) -> PreparedRequest:
    """Validate a request and compute its plan without writing anything (the Preview button)."""
    access.require_role(actor, "viewer", "previewing an action")
    return action_plan(verb=verb, target_key=target_key, params=params)


def action_plan(*, verb: str, target_key: str, params: Any) -> PreparedRequest:
    """``action_prepare`` without an actor: what the control plane itself proposes (the suggested remediation
    a Slack message offers, with its plan in the button's confirm dialog). Nothing is written and nothing
    runs; a press still goes through ``action_request`` with the pressing person's role."""
    target = _get_target(target_key)
    verb_obj = _verb_for(target, verb)
    typed = _validate_params(verb_obj, params)
    return PreparedRequest(target=target, verb=verb_obj, params=typed, plan=_plan(verb_obj, target, typed))


def _active_conflict(target: Target) -> Conflict:
    active = ActionRun.objects.filter(HOLDS_TARGET, target=target).select_related("requested_by").first()
    if active is None:  # it finished between the failed insert and this read
        return Conflict(f"another action on {target.key} was active; try again")
    if active.state == ActionState.NEEDS_ATTENTION:
        return Conflict(
            f"action {active.id} ({active.verb}, requested by {active.requested_by}) needs attention and still "
            f"holds {target.key}: {active.error} Resolve it first.",
            details={"active_action": str(active.id), "state": active.state, "verb": active.verb},
        )
    return Conflict(
        f"action {active.id} ({active.verb}, {active.state}, requested by {active.requested_by}) is already "
        f"active on {target.key}; wait for it or cancel it",
        details={"active_action": str(active.id), "state": active.state, "verb": active.verb},
    )


def _existing_for_key(actor: User, key: str, fingerprint: str) -> ActionRun | None:
    existing = ActionRun.objects.filter(requested_by_id=actor.pk, idempotency_key=key).first()
    if existing is not None and existing.request_fingerprint != fingerprint:
        raise IdempotencyMismatch(
            f"Idempotency-Key {key!r} was already used for a different request (action {existing.id})",
            details={"action": str(existing.id)},
        )
    return existing


def action_request(
    *,
    actor: User,
    verb: str,
    target_key: str,
    params: Any,
    reason: str,
    idempotency_key: str | None = None,
    incident: Incident | None = None,
    approval_asked_by: str = "",
) -> ActionRequestResult:
    """Request an action: validate, plan, apply policy, then write the action and its audit events in one
    transaction and dispatch it on commit (or leave it awaiting approval). ``approval_asked_by``: a caller
    (a runbook step) that wants a second person's approval even where the policy would not ask.

    Same idempotency key and same body returns the earlier action (``created`` False); the same key with
    another body is an IdempotencyMismatch; an active action on the target is a Conflict naming it.
    """
    access.require_role(actor, "responder", "requesting an action", scope="actions:write")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("'reason' is required: say why this action is needed (it goes into the audit trail)")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"'reason' is longer than {MAX_REASON} characters")
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
        raise InvalidInput("Idempotency-Key must be 1 to 200 characters")
    params = params if params is not None else {}
    fingerprint = request_fingerprint(verb=verb, target_key=target_key, params=params, reason=reason)
    if idempotency_key:
        existing = _existing_for_key(actor, idempotency_key, fingerprint)
        if existing is not None:
            return ActionRequestResult(existing, created=False)

    prepared = action_prepare(actor=actor, verb=verb, target_key=target_key, params=params)
    plan = prepared.plan
    if plan.requires_consent:
        raise InvalidInput(
            f"this {verb} needs explicit consent: {plan.consent_reason}",
            details={"plan": plan.model_dump(mode="json"), "consent_required": True},
        )
    target = prepared.target
    # No "is one active?" read first: the partial unique index answers that in the INSERT (IntegrityError
    # below), also for concurrent requests a read would miss.
    approval = policy.approval_needed(environment=target.environment, plan=plan, asked_by=approval_asked_by)
    ctx = context.current()
    now = timezone.now()
    action = ActionRun(
        verb=verb,
        target=target,
        environment=target.environment,
        params=prepared.params.model_dump(mode="json"),
        reason=reason.strip(),
        channel=ctx.channel,
        requested_by=actor,
        request_id=ctx.request_id,
        idempotency_key=idempotency_key or None,
        request_fingerprint=fingerprint,
        incident=incident,
        plan=plan.model_dump(mode="json"),
        risk=plan.risk.value,
        requires_approval=approval.required,
        approval_reason=approval.reason,
        idempotent=prepared.verb.idempotent,
        state=ActionState.AWAITING_APPROVAL if approval.required else ActionState.QUEUED,
        max_attempts=settings.CONTROLPLANE["MAX_ATTEMPTS"],
        queued_at=None if approval.required else now,
        dispatched_at=None if approval.required else now,
    )
    try:
        with transaction.atomic():
            action.save(force_insert=True)
            requested = AuditEntry(
                event="action.requested",
                obj=action,
                after={
                    "verb": verb,
                    "target": target.key,
                    "params": action.params,
                    "environment": target.environment.name,
                },
                reason=action.reason,
            )
            planned = AuditEntry(
                event="action.planned",
                obj=action,
                after={
                    "summary": plan.summary,
                    "risk": plan.risk.value,
                    "counts": plan.counts,
                    # cost is a plan figure the approver decided on: the trail keeps it with the decision
                    "estimated_bytes": plan.estimated_bytes,
                    "estimated_cost_usd": plan.estimated_cost_usd,
                    "approval_required": approval.required,
                    "approval_reason": approval.reason,
                    "state": action.state,
                },
            )
            audit_record_many([requested, planned])
            signals.action_requested.send(sender=ActionRun, action=action, requester=ctx.actor_name)
            if not approval.required:
                dispatch_on_commit(action)
    except IntegrityError:
        return _replay_or_conflict(actor, idempotency_key, fingerprint, target)
    return ActionRequestResult(action, created=True)


def _replay_or_conflict(actor: User, key: str | None, fingerprint: str, target: Target) -> ActionRequestResult:
    """The target is busy: if it is busy with this very request (a concurrent duplicate carrying the same
    Idempotency-Key), answer with that action; otherwise it is a conflict naming the active action."""
    if key:
        existing = _existing_for_key(actor, key, fingerprint)
        if existing is not None:
            return ActionRequestResult(existing, created=False)
    raise _active_conflict(target)


def _announce_decision_on_commit(action: ActionRun, decision: str, comment: str) -> None:
    action_id, approver = action.id, context.current().actor_name

    def send() -> None:
        signals.action_decided.send(
            sender=ActionRun, action_id=action_id, decision=decision, approver=approver, comment=comment
        )

    transaction.on_commit(send)


def _locked(action_id: Any) -> ActionRun:
    action = ActionRun.objects.select_for_update().filter(id=action_id).first()
    if action is None:
        raise NotFound(f"no action {action_id}")
    return action


def approval_deadline(action: ActionRun) -> Any:
    """When an action awaiting approval expires (``ACTION_APPROVAL_TTL_HOURS`` after its request)."""
    return action.requested_at + timedelta(hours=settings.CONTROLPLANE["APPROVAL_TTL_HOURS"])


def action_approve(*, actor: User, action_id: Any, comment: str = "") -> ActionRun:
    """A different approver lets an awaiting action run; it is queued and dispatched on commit.

    Refused when the requester no longer holds the responder role, and for an action past its approval
    deadline, which ends ``expired`` then and there (as the reaper would have ended it)."""
    with transaction.atomic():
        action = _locked(action_id)
        policy.check_can_decide(actor, action)
        if action.state != ActionState.AWAITING_APPROVAL:
            raise Conflict(f"action {action.id} is {action.state}; only an action awaiting approval can be approved")
        now = timezone.now()
        expired = now >= approval_deadline(action)
        if expired:
            action_expire(action, now=now)
        else:
            policy.check_requester_still_may(action)
            Approval.objects.create(
                action=action,
                approver_id=actor.pk,
                decision=Approval.Decision.APPROVED,
                comment=comment,
                channel=context.current().channel,
            )
            action.state, action.queued_at, action.dispatched_at = ActionState.QUEUED, now, now
            action.save(update_fields=["state", "queued_at", "dispatched_at"])
            audit_record(
                event="action.approved",
                obj=action,
                before={"state": "awaiting_approval"},
                after={"state": action.state},
                reason=comment,
            )
            _announce_decision_on_commit(action, "approved", comment)
            dispatch_on_commit(action)
    if expired:  # after the commit: the expiry stays written
        raise Conflict(f"action {action.id} expired: {action.error}")
    return action


def action_reject(*, actor: User, action_id: Any, comment: str = "") -> ActionRun:
    """A different approver refuses an awaiting action; it ends as rejected."""
    with transaction.atomic():
        action = _locked(action_id)
        policy.check_can_decide(actor, action)
        if action.state != ActionState.AWAITING_APPROVAL:
            raise Conflict(f"action {action.id} is {action.state}; only an action awaiting approval can be rejected")
        Approval.objects.create(
            action=action,
            approver_id=actor.pk,
            decision=Approval.Decision.REJECTED,
            comment=comment,
            channel=context.current().channel,
        )
        action.state, action.finished_at = ActionState.REJECTED, timezone.now()
        action.save(update_fields=["state", "finished_at"])
        audit_record(
            event="action.rejected",
            obj=action,
            before={"state": "awaiting_approval"},
            after={"state": action.state},
            reason=comment,
        )
        _announce_decision_on_commit(action, "rejected", comment)
        announce_finished_on_commit(action)
    return action


def action_cancel(*, actor: User, action_id: Any, reason: str = "") -> ActionRun:
    """Cancel a waiting or queued action at once; ask a running one to stop (the worker honours it at its
    next heartbeat if the connector can stop, otherwise the effect completes and is verified)."""
    with transaction.atomic():
        action = _locked(action_id)
        policy.check_can_cancel(actor, action)
        before = {"state": action.state}
        if action.state in (ActionState.AWAITING_APPROVAL, ActionState.QUEUED):
            action.state, action.finished_at = ActionState.CANCELLED, timezone.now()
            action.save(update_fields=["state", "finished_at"])
            audit_record(
                event="action.cancelled",
                obj=action,
                before=before,
                after={"state": action.state},
                reason=reason,
            )
            announce_finished_on_commit(action)
        elif action.state == ActionState.RUNNING:
            if not action.cancel_requested:
                action.cancel_requested = True
                action.save(update_fields=["cancel_requested"])
                audit_record(
                    event="action.cancel_requested",
                    obj=action,
                    before=before,
                    after={"state": action.state, "cancel_requested": True},
                    reason=reason,
                )
        else:
            raise Conflict(f"action {action.id} already ended as {action.state}")
    return action


def action_resolve(*, actor: User, action_id: Any, note: str) -> ActionRun:
    """A person has dealt with what an action left behind (``needs_attention``): record who and how, and
    free the target for the next action. The action's state stays ``needs_attention`` (its history says
    what happened); ``resolved_at`` releases the one-per-target lock."""
    if not isinstance(note, str) or not note.strip():
        raise InvalidInput("'note' is required: say what you found and did (it goes into the audit trail)")
    if len(note) > MAX_REASON:
        raise InvalidInput(f"'note' is longer than {MAX_REASON} characters")
    with transaction.atomic():
        action = _locked(action_id)
        policy.check_can_resolve(actor, action)
        if not action.awaits_resolution:
            state = "already resolved" if action.resolved_at else action.state
            raise Conflict(f"action {action.id} is {state}; only an action that needs attention can be resolved")
        action.resolved_at, action.resolved_by_id = timezone.now(), actor.pk
        action.save(update_fields=["resolved_at", "resolved_by"])
        audit_record(
            event="action.resolved",
            obj=action,
            before={"state": action.state, "resolved": False},
            after={"state": action.state, "resolved": True},
            reason=note.strip(),
        )
    return action

"""The action path's rules: protected environments, risk and cost thresholds, the two-person rule, and who may
cancel or resolve an action.

Built on the roles and token scopes of ``controlplane/access.py`` (which every app shares); what is
particular to actions stays here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

from connectors.base import Plan, Risk
from controlplane.access import PolicyError, has_role, require_role, role_of

if TYPE_CHECKING:
    from controlplane.actions.models import ActionRun
    from controlplane.catalog.models import Environment

_RISK_RANK = {Risk.LOW: 1, Risk.MEDIUM: 2, Risk.HIGH: 3}
MAX_APPROVAL_REASON = 200  # ActionRun.approval_reason's length


@dataclass(frozen=True)
class ApprovalDecision:
    required: bool
    reason: str


def approval_needed(*, environment: Environment, plan: Plan, asked_by: str = "") -> ApprovalDecision:
    """Who else must agree before a plan runs. A second person is needed in a protected environment, for a
    plan at or above the configured risk (``APPROVAL_RISK``), and, in every environment, for a plan whose
    estimated cost is at or over ``APPROVAL_COST_USD``. A plan that only reads (``Plan.read_only``: it changes
    nothing anywhere) is spared the first two but not the cost: scanning data is paid for all the same.
    ``asked_by`` names a caller whose procedure wants a second person whatever these rules say (a runbook
    step with ``approval: always``). The reason names every rule that applies."""
    reasons: list[str] = [f"{asked_by} asks for one"] if asked_by else []
    if not plan.read_only:
        if environment.protected:
            reasons.append(f"{environment.name} is a protected environment")
        threshold = Risk(settings.CONTROLPLANE["APPROVAL_RISK"])
        if _RISK_RANK[plan.risk] >= _RISK_RANK[threshold]:
            reasons.append(f"the plan's risk is {plan.risk.value}")
    limit = float(settings.CONTROLPLANE["APPROVAL_COST_USD"])
    if plan.estimated_cost_usd is not None and plan.estimated_cost_usd >= limit:
        reasons.append(
            f"the estimated cost ${plan.estimated_cost_usd:,.2f} is at or over the ${limit:,.2f} approval threshold"
        )
    reason = "; ".join(reasons)
    if len(reason) > MAX_APPROVAL_REASON:  # every rule at once: the column keeps the first ones whole
        reason = reason[: MAX_APPROVAL_REASON - 1] + "…"
    return ApprovalDecision(bool(reasons), reason)


def check_can_decide(user: Any, action: ActionRun) -> None:
    """An approver or admin, and never the requester: the two-person rule has no exception."""
    require_role(user, "approver", "approving or rejecting an action", scope="actions:approve")
    if action.requested_by_id == user.pk:
        raise PolicyError("you requested this action; a different person must approve or reject it")


def check_requester_still_may(action: ActionRun) -> None:
    """At approval, the requester must still be active and hold the responder role: approving runs the
    action as theirs, and a person who lost the role (or left) can no longer ask for it."""
    requester = action.requested_by
    if not requester.is_active or not has_role(requester, "responder"):
        held = role_of(requester) or ("an inactive account" if not requester.is_active else "no role")
        raise PolicyError(
            f"{requester.get_username()} requested this action but now has {held}, not the responder role: "
            "it cannot be approved; reject it, or have a responder request it again"
        )


def check_can_cancel(user: Any, action: ActionRun) -> None:
    """The requester (a responder at least) or any approver may cancel; cancelling someone else's action is
    an approver's power, so through a token it takes ``actions:approve``."""
    if action.requested_by_id == user.pk:
        require_role(user, "responder", "cancelling an action", scope="actions:write")
    else:
        require_role(user, "approver", "cancelling someone else's action", scope="actions:approve")


def check_can_resolve(user: Any, action: ActionRun) -> None:
    """Resolving what an action left behind frees its target: a responder (the on-call person who checked
    it by hand); in a protected environment an approver, as for approving the action in the first place."""
    if action.environment.protected:
        require_role(
            user,
            "approver",
            f"resolving an action in protected environment {action.environment.name}",
            scope="actions:approve",
        )
    else:
        require_role(user, "responder", "resolving an action that needs attention", scope="actions:write")

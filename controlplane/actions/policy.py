"""Who may do what: roles, protected environments, risk thresholds and the two-person rule.

Roles are Django groups named after them (viewer < responder < approver < admin); a superuser is an
admin. API tokens narrow a user's role by scopes; they never widen it: a check names the role and the
scope together, and the scope counts when the actor acts through a token (the change context holds its
scopes; a person in a session has none to narrow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

from connectors.base import Plan, Risk
from controlplane.audit import context
from controlplane.errors import Forbidden

if TYPE_CHECKING:
    from controlplane.actions.models import ActionRun
    from controlplane.catalog.models import Environment

ROLES = ("viewer", "responder", "approver", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}
_RISK_RANK = {Risk.LOW: 1, Risk.MEDIUM: 2, Risk.HIGH: 3}


class PolicyError(Forbidden):
    """The actor may not do this. ``message`` says why, in words for the person refused."""


def role_of(user: Any) -> str | None:
    """The highest role the user holds, or None."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if getattr(user, "is_superuser", False):
        return "admin"
    cached: str | None = getattr(user, "_controlplane_role", "")
    if cached != "":
        return cached
    names = set(user.groups.values_list("name", flat=True))
    held = [r for r in ROLES if r in names]
    role = max(held, key=_RANK.__getitem__) if held else None
    user._controlplane_role = role
    return role


def has_role(user: Any, minimum: str) -> bool:
    role = role_of(user)
    return role is not None and _RANK[role] >= _RANK[minimum]


def require_role(user: Any, minimum: str, doing: str, *, scope: str | None = None) -> None:
    """The user holds ``minimum`` or higher and, acting through an API token, the token grants ``scope``."""
    if not has_role(user, minimum):
        held = role_of(user) or "no role"
        raise PolicyError(f"{doing} needs the {minimum} role or higher; you have {held}")
    granted = context.current().scopes
    if scope is not None and granted is not None and scope not in granted:
        raise PolicyError(f"{doing} needs an API token with the '{scope}' scope; this one has {sorted(granted)}")


@dataclass(frozen=True)
class ApprovalDecision:
    required: bool
    reason: str


def approval_needed(*, environment: Environment, plan: Plan) -> ApprovalDecision:
    """Protected environments and plans at or above the configured risk need a second person."""
    if environment.protected:
        return ApprovalDecision(True, f"{environment.name} is a protected environment")
    threshold = Risk(settings.CONTROLPLANE["APPROVAL_RISK"])
    if _RISK_RANK[plan.risk] >= _RISK_RANK[threshold]:
        return ApprovalDecision(True, f"the plan's risk is {plan.risk.value}")
    return ApprovalDecision(False, "")


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

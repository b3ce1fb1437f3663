"""Who may do what, in general: roles and API token scopes.

Roles are Django groups named after them (viewer < responder < approver < admin); a superuser is an
admin. API tokens narrow a user's role by scopes; they never widen it: a check names the role and the
scope together, and the scope counts when the actor acts through a token (the change context holds its
scopes; a person in a session has none to narrow).

Every app checks access through this module (catalog checks, incidents, actions, runbooks, the API and
the web pages), so it sits below all of them: it imports only the change context and the error types.
The rules of one domain built on these primitives stay with it (``controlplane/actions/policy.py``: the
two-person rule, approvals, who may cancel or resolve an action).
"""

from __future__ import annotations

from typing import Any

from controlplane.audit import context
from controlplane.errors import Forbidden

ROLES = ("viewer", "responder", "approver", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}


class PolicyError(Forbidden):
    """The actor may not do this. ``message`` says why, in words for the person refused."""


def role_of(user: Any) -> str | None:
    """The highest role the user holds, or None (anonymous, inactive, or in no role group)."""
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
    """The user holds ``minimum`` or a higher role (scopes do not count here: this answers what a page
    may offer, ``require_role`` decides what the actor may do)."""
    role = role_of(user)
    return role is not None and _RANK[role] >= _RANK[minimum]


def require_role(user: Any, minimum: str, doing: str, *, scope: str | None = None) -> None:
    """The user holds ``minimum`` or higher and, acting through an API token, the token grants ``scope``;
    otherwise PolicyError naming ``doing`` and what is missing."""
    if not has_role(user, minimum):
        held = role_of(user) or "no role"
        raise PolicyError(f"{doing} needs the {minimum} role or higher; you have {held}")
    granted = context.current().scopes
    if scope is not None and granted is not None and scope not in granted:
        raise PolicyError(f"{doing} needs an API token with the '{scope}' scope; this one has {sorted(granted)}")

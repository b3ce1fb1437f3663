"""Template context shared by every page: the user's role and how many approvals wait for them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest

from controlplane.access import has_role, role_of
from controlplane.actions.selectors import awaiting_approval_for


def _waiting_count(user: Any) -> Callable[[], int]:
    # A callable: the template calls it only where the nav shows it, so partials pay no query for it.
    def count() -> int:
        return awaiting_approval_for(user).count() if has_role(user, "approver") else 0

    return count


def navigation(request: HttpRequest) -> dict[str, Any]:
    """``current_role`` (viewer ... admin, or None) and ``approvals_waiting`` (lazy count for the nav)."""
    user = getattr(request, "user", None)
    return {
        "current_role": lambda: role_of(user),
        "approvals_waiting": _waiting_count(user),
    }

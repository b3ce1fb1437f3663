"""Template context shared by every page."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from controlplane.actions.policy import role_of


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    return {"current_role": role_of(user) if user is not None else None}

"""``Authorization: Bearer <token>`` authentication and scope checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from controlplane import access
from controlplane.api.models import ApiToken
from controlplane.api.services import api_token_resolve
from controlplane.audit import context


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """Authenticates a bot by its API token and attaches the user to the change context."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme != self.keyword or not raw.strip():
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <token>'")
        token = api_token_resolve(raw.strip())
        if token is None:
            raise exceptions.AuthenticationFailed("the API token is unknown, expired or revoked")
        context.set_user(token.user, scopes=frozenset(token.scopes))
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class SessionWithContext(authentication.SessionAuthentication):
    """Session auth for the browsable pages' htmx calls; the user goes into the change context."""

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        result = super().authenticate(request)
        if result is not None:
            context.set_user(result[0], scopes=None)
        return result


@dataclass(frozen=True)
class Rule:
    """Who may call one method of one endpoint: at least ``role``, and through an API token, only one
    granting ``scope`` (scopes narrow a role; they never widen it)."""

    role: str
    scope: str


def rules(*, get: tuple[str, str] | None = None, post: tuple[str, str] | None = None) -> dict[str, Rule]:
    """An endpoint's access table, method by method: ``access = rules(get=("viewer", "catalog:read"))``.

    HEAD answers what GET answers (Django runs ``get`` for it), so it carries GET's rule, explicitly;
    OPTIONS and every method not listed answer 405 before anything else runs.
    """
    table: dict[str, Rule] = {}
    if get is not None:
        table["GET"] = table["HEAD"] = Rule(*get)
    if post is not None:
        table["POST"] = Rule(*post)
    return table


class RoleAndScope(permissions.BasePermission):
    """Enforces the view's ``access`` table before the view runs: authenticated (else 401), a method the
    table lists (else 405), the role (for every user) and the scope (for a token user). Services check
    again what the endpoint cannot know (a runbook step's kind, whose action is cancelled)."""

    message = "you may not do this"

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        table: dict[str, Rule] = getattr(view, "access", {})
        rule = table.get(request.method or "")
        if rule is None:
            raise exceptions.MethodNotAllowed(request.method or "")
        if not access.has_role(user, rule.role):
            held = access.role_of(user) or "no role"
            self.message = f"{request.method} {request.path} needs the {rule.role} role or higher; you have {held}"
            return False
        token = request.auth
        if isinstance(token, ApiToken) and rule.scope not in token.scopes:
            self.message = f"this API token lacks the '{rule.scope}' scope"
            return False
        return True

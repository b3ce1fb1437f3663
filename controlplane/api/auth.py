"""``Authorization: Bearer <token>`` authentication and scope checks."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

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
        context.set_user(token.user)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class SessionWithContext(authentication.SessionAuthentication):
    """Session auth for the browsable pages' htmx calls; the user goes into the change context."""

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        result = super().authenticate(request)
        if result is not None:
            context.set_user(result[0])
        return result


class HasScope(permissions.BasePermission):
    """The view's ``required_scopes`` (by method, or ``*``) must be granted to a token; session users have
    all scopes (their role still applies in the services)."""

    message = "this API token lacks the scope this endpoint needs"

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        token = request.auth
        if not isinstance(token, ApiToken):
            return True
        required: dict[str, str] = getattr(view, "required_scopes", {})
        scope = required.get(request.method or "GET") or required.get("*")
        if scope is None:
            return True
        if scope not in token.scopes:
            self.message = f"this API token lacks the '{scope}' scope"
            return False
        return True

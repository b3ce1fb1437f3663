"""Minting, resolving and revoking API tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane import access
from controlplane.api.models import SCOPES, ApiToken
from controlplane.audit.services import audit_record
from controlplane.configcache import ConfigCache
from controlplane.errors import InvalidInput

if TYPE_CHECKING:
    from django.contrib.auth.models import User

TOKEN_PREFIX = "cpt_"  # noqa: S105 (a marker, not a secret)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def api_token_create(*, user: User, name: str, scopes: list[str], days: int | None = None) -> tuple[ApiToken, str]:
    """Mint a token; returns the row and the clear token, which is never stored or shown again."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInput(f"unknown or missing scopes {unknown}; choose from {sorted(SCOPES)}")
    days = int(days or settings.CONTROLPLANE["API_TOKEN_DEFAULT_DAYS"])
    if not 1 <= days <= 366:
        raise InvalidInput("a token lives 1 to 366 days")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=raw[: len(TOKEN_PREFIX) + 6],
        token_hash=hash_token(raw),
        scopes=sorted(set(scopes)),
        expires_at=timezone.now() + timedelta(days=days),
    )
    audit_record(
        event="api_token.created",
        obj=token,
        after={
            "user": user.get_username(),
            "scopes": token.scopes,
            "expires_at": token.expires_at.isoformat(),
        },
    )
    return token, raw


# Resolved tokens with their user and role, per process: a bot's every request would otherwise cost two
# queries (token + user, then the role's groups). Revoking a token or changing a user, a group or a
# membership invalidates every process's cache (controlplane/api/receivers.py).
_tokens: ConfigCache[ApiToken] = ConfigCache()


def api_token_resolve(raw: str) -> ApiToken | None:
    """The live token for a clear token, or None (unknown, expired, revoked or inactive user).

    The token comes with its user and the user's role resolved (``access.role_of`` is answered from it).
    """
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    digest = hash_token(raw)

    def load() -> ApiToken | None:
        found = ApiToken.objects.select_related("user").filter(token_hash=digest).first()
        if found is not None:
            access.role_of(found.user)  # resolved once, kept with the cached user
        return found

    token = _tokens.get(digest, load)
    now = timezone.now()
    if token is None or token.revoked_at is not None or token.expires_at <= now or not token.user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=5):
        # Throttled so a busy bot does not turn every request into a write.
        token.last_used_at = now
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


@transaction.atomic
def api_token_revoke(*, token: ApiToken) -> None:
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit_record(event="api_token.revoked", obj=token, after={"revoked_at": token.revoked_at.isoformat()})

"""Who a Slack user is here: the link from a Slack user id to a control-plane user.

A link is made by an admin (``manage.py slack_link``), by the user proving both ends (the profile page
gives a one-time code, the user sends ``/runbook link <code>`` from Slack), or from the Slack profile: a
confirmed email that matches exactly one active user (``users.info``, scope ``users:read.email``). Typing a
Slack user id into the profile page is not enough: whoever is linked acts with the linked user's role, so
the Slack side must prove it is that Slack user. Every link and unlink is audited.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from slack_sdk.errors import SlackApiError

from controlplane.audit.services import audit_record
from controlplane.errors import InvalidInput, NotFound
from controlplane.redis import redis_client
from controlplane.slack.client import web_client
from controlplane.slack.models import SlackUserLink

log = logging.getLogger(__name__)

SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,31}$")
LINK_CODE_TTL_SECONDS = 600
_CODE_KEY = "slack:link-code:{}"


def _clean_id(slack_user_id: Any) -> str:
    value = str(slack_user_id or "").strip().upper()
    if not SLACK_USER_ID.match(value):
        raise InvalidInput(
            f"{str(slack_user_id)[:40]!r} is not a Slack user id (it starts with U or W, e.g. U024BE7LH; "
            "Slack shows it under Profile > More > Copy member ID)"
        )
    return value


def slack_link_set(*, user: Any, slack_user_id: Any, via: str, team_id: str = "") -> SlackUserLink:
    """Link ``slack_user_id`` to ``user`` (replacing the user's earlier link). Refused when that Slack user
    is linked to someone else: unlink it first, so nobody takes over another person's link by accident."""
    sid = _clean_id(slack_user_id)
    if not user.is_active:
        raise InvalidInput(f"{user.get_username()} is not an active user")
    with transaction.atomic():
        taken = SlackUserLink.objects.select_for_update().filter(slack_user_id=sid).select_related("user").first()
        if taken is not None and taken.user_id != user.pk:
            raise InvalidInput(f"Slack user {sid} is linked to {taken.user.get_username()}; unlink it first")
        mine = SlackUserLink.objects.select_for_update().filter(user=user).first()
        before = {"slack_user_id": mine.slack_user_id, "via": mine.via} if mine is not None else None
        if mine is None:
            mine = SlackUserLink(user=user)
        elif mine.slack_user_id == sid:
            return mine
        mine.slack_user_id, mine.slack_team_id, mine.via = sid, team_id[:32], via
        mine.save()
        audit_record(
            event="slack.link.created" if before is None else "slack.link.changed",
            obj=user,
            before=before,
            after={"slack_user_id": sid, "via": via},
        )
    return mine


def slack_link_remove(*, user: Any) -> None:
    """Remove ``user``'s Slack link; NotFound when there is none."""
    with transaction.atomic():
        link = SlackUserLink.objects.select_for_update().filter(user=user).first()
        if link is None:
            raise NotFound(f"{user.get_username()} has no Slack link")
        link.delete()
        audit_record(
            event="slack.link.removed", obj=user, before={"slack_user_id": link.slack_user_id, "via": link.via}
        )


def slack_link_code_issue(*, user: Any) -> str:
    """A one-time code (10 minutes) that links ``user`` to whichever Slack user sends ``/runbook link <code>``."""
    code = secrets.token_hex(4).upper()
    redis_client().set(_CODE_KEY.format(code), str(user.pk), ex=LINK_CODE_TTL_SECONDS)
    return code


def slack_link_code_redeem(*, code: str, slack_user_id: str, team_id: str) -> SlackUserLink:
    """Link the Slack user who sent ``code`` to the user it was issued to; a code works once."""
    raw: bytes | None = redis_client().getdel(_CODE_KEY.format(code.strip().upper()))  # type: ignore[assignment]
    user = get_user_model().objects.filter(pk=int(raw), is_active=True).first() if raw else None
    if user is None:
        raise InvalidInput("that link code is unknown or expired (codes last 10 minutes): get a new one")
    return slack_link_set(user=user, slack_user_id=slack_user_id, via=SlackUserLink.Via.PROFILE, team_id=team_id)


def _confirmed_email(slack_user_id: str) -> str:
    """The Slack user's email when Slack vouches for it (not a bot, guest or deactivated account, and not
    flagged unconfirmed); empty otherwise or when Slack does not answer."""
    try:
        info = web_client().users_info(user=slack_user_id)["user"]
    except (SlackApiError, OSError):
        log.warning("users.info failed for %s", slack_user_id, exc_info=True)
        return ""
    flags = ("deleted", "is_bot", "is_restricted", "is_ultra_restricted", "is_stranger")
    if any(info.get(flag) for flag in flags) or info.get("is_email_confirmed") is False:
        return ""
    return str((info.get("profile") or {}).get("email") or "").strip()


def slack_user_resolve(*, slack_user_id: str, team_id: str = "") -> Any | None:
    """The active user a Slack user acts as: their link, or else a new link (via email) when their confirmed
    Slack email belongs to exactly one active user; None when neither holds."""
    link = SlackUserLink.objects.select_related("user").filter(slack_user_id=slack_user_id).first()
    if link is not None:
        return link.user if link.user.is_active else None
    email = _confirmed_email(slack_user_id)
    if not email:
        return None
    matches = list(get_user_model().objects.filter(email__iexact=email, is_active=True)[:2])
    if len(matches) != 1 or hasattr(matches[0], "slack_link"):
        return None
    try:
        slack_link_set(user=matches[0], slack_user_id=slack_user_id, via=SlackUserLink.Via.EMAIL, team_id=team_id)
    except InvalidInput:  # linked concurrently
        return None
    return matches[0]

"""Change context (who, through which channel, in which request) carried in a ContextVar.

Set by the web/API middleware, by Celery task entry points and by the Slack handlers; read by the audit
service, so every audited write knows its actor without threading it through every call. A ContextVar,
not a thread-local, so it is correct under threads and asyncio alike.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


class Channel:
    WEB = "web"
    API = "api"
    SLACK = "slack"
    RUNBOOK = "runbook"
    SCHEDULE = "schedule"
    SYSTEM = "system"

    CHOICES = [(c, c) for c in ("web", "api", "slack", "runbook", "schedule", "system")]


@dataclass(frozen=True)
class ChangeContext:
    """Who is acting (``user`` None for the system), through which channel, under which request id.

    ``scopes``: what the API token the user acts through grants (``controlplane.api.models.SCOPES``), or
    None when the user acts in person (a session) or the system acts; policy checks read it with the role.
    """

    channel: str = Channel.SYSTEM
    request_id: str = ""
    user: AbstractBaseUser | AnonymousUser | None = None
    actor_name: str = "system"
    scopes: frozenset[str] | None = None


_current: ContextVar[ChangeContext] = ContextVar("change_context", default=ChangeContext())  # noqa: B039 (frozen)


def new_request_id() -> str:
    return uuid.uuid4().hex


def current() -> ChangeContext:
    return _current.get()


@contextlib.contextmanager
def change_context(
    *,
    channel: str,
    user: AbstractBaseUser | AnonymousUser | None = None,
    request_id: str | None = None,
    actor_name: str | None = None,
    scopes: frozenset[str] | None = None,
) -> Iterator[ChangeContext]:
    """Run a block under a change context; restores the previous one on exit."""
    if actor_name is None:
        actor_name = user.get_username() if user is not None and user.is_authenticated else "system"
    ctx = ChangeContext(
        channel=channel, request_id=request_id or new_request_id(), user=user, actor_name=actor_name, scopes=scopes
    )
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def set_user(
    user: AbstractBaseUser | AnonymousUser | None,
    *,
    channel: str | None = None,
    scopes: frozenset[str] | None = None,
) -> None:
    """Attach the authenticated user once authentication ran (DRF authenticates inside the view), with the
    scopes of the API token it came with (None: in person)."""
    ctx = _current.get()
    name = user.get_username() if user is not None and user.is_authenticated else ctx.actor_name
    _current.set(replace(ctx, user=user, actor_name=name, channel=channel or ctx.channel, scopes=scopes))


class LogContextFilter(logging.Filter):
    """Adds ``request_id`` to every log record so log lines join up with audit events."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current.get().request_id or "-"
        return True

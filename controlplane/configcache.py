"""Per-process caches of rows that every request reads and people rarely change: API tokens with their
user and role, catalog targets with their connection and environment.

An entry is used while it is younger than its TTL *and* the configuration generation in Redis is the one
it was cached under. Every change to what the cached rows stand for (a token revoked, a role granted, an
environment made protected, a connection's config edited) replaces the generation through
``config_changed()`` (wired to model signals by the owning apps), so the change applies on the next request
in every process; the TTL only bounds the damage if Redis lost a replacement. While Redis is unreachable
nothing is cached and every read goes to the database.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Generic, TypeVar, cast

import redis
from django.db import transaction

from controlplane.redis import redis_client

log = logging.getLogger(__name__)

GENERATION_KEY = "controlplane:config-generation"

V = TypeVar("V")


# Within one web request the generation is read once (the token and the target lookups both need it):
# ``one_read_per_request`` marks the request, the first read fills it in. Outside requests (workers,
# commands) every call reads Redis.
_OUTSIDE, _UNREAD = object(), object()
_request_generation: ContextVar[object] = ContextVar("config_generation", default=_OUTSIDE)


@contextmanager
def one_read_per_request() -> Iterator[None]:
    token = _request_generation.set(_UNREAD)
    try:
        yield
    finally:
        _request_generation.reset(token)


def current_generation() -> bytes | None:
    """A random value replaced on every change; random rather than a counter, so a Redis that restarted
    empty starts a new generation instead of returning to an old one. None when Redis is unreachable."""
    memo = _request_generation.get()
    if memo is _OUTSIDE:
        return _read_generation()
    if memo is _UNREAD:
        memo = _read_generation()
        _request_generation.set(memo)
    return cast("bytes | None", memo)


def _read_generation() -> bytes | None:
    try:
        client = redis_client()
        generation = client.get(GENERATION_KEY)
        if generation is None:
            client.set(GENERATION_KEY, uuid.uuid4().hex, nx=True)
            generation = client.get(GENERATION_KEY)
        return cast("bytes | None", generation)
    except redis.RedisError:
        return None


def config_changed() -> None:
    """Make every process forget its cached rows: now, and again once the change commits (a process that
    reloads between the two could have read the rows as they were before the change)."""

    def replace() -> None:
        if _request_generation.get() is not _OUTSIDE:
            _request_generation.set(_UNREAD)  # this request reads the new one
        try:
            redis_client().set(GENERATION_KEY, uuid.uuid4().hex)
        except redis.RedisError:
            log.error("could not invalidate cached configuration; cached rows expire within their TTL")

    replace()
    transaction.on_commit(replace)


class ConfigCache(Generic[V]):
    """``get(key, load)``: the cached value for ``key`` or ``load()``'s, which is cached unless it is None.

    Values are shared by the threads of a process: treat them as read-only.
    """

    def __init__(self, *, ttl: float = 60.0, limit: int = 10_000) -> None:
        self.ttl = ttl
        self.limit = limit
        self._entries: dict[str, tuple[float, bytes, V]] = {}

    def get(self, key: str, load: Callable[[], V | None]) -> V | None:
        generation = current_generation()
        hit = self._entries.get(key)
        if hit is not None and hit[1] == generation and time.monotonic() - hit[0] < self.ttl:
            return hit[2]
        value = load()
        if value is not None and generation is not None:
            if len(self._entries) >= self.limit:
                self._entries.clear()
            self._entries[key] = (time.monotonic(), generation, value)
        return value

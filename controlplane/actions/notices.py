"""An action's end, announced on a Redis channel to other processes (the API's ``?wait``, anyone else who
waits on one action).

Published by ``announce_finished_on_commit`` after the finishing transaction committed and *before* the
in-process ``action_finished`` receivers run (incident timeline, runbook step): a waiting bot hears of
the end without waiting for that bookkeeping. A lost message costs a waiter its re-check interval.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from controlplane.redis import redis_client

log = logging.getLogger(__name__)


def _channel(action_id: Any) -> str:
    return f"controlplane:action-finished:{action_id}"


def finished_publish(*, action_id: Any) -> None:
    """Tell the subscribers of this action's channel that it ended. Never raises: the end is committed,
    and waiters re-read the state on their own after a while."""
    try:
        redis_client().publish(_channel(action_id), "finished")
    except redis.RedisError:
        log.warning("could not announce the end of action %s to waiting requests; they notice within 1 s", action_id)


def finished_subscribe(*, action_id: Any) -> redis.client.PubSub | None:
    """A subscription to this action's end, or None when Redis is not reachable. Subscribe *before*
    reading the state, so an end between the read and the wait cannot be missed."""
    try:
        pubsub = redis_client().pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(_channel(action_id))
    except redis.RedisError:
        return None
    return pubsub

"""An action's end, and a runbook run's changes, announced on Redis channels to other processes (the API's
``?wait``, anyone else who waits on one action or run).

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


def _run_channel(run_id: Any) -> str:
    return f"controlplane:runbook-run-changed:{run_id}"


def _publish(channel: str, what: str) -> None:
    """Never raises: the change is committed, and waiters re-read the state on their own after a while."""
    try:
        redis_client().publish(channel, "changed")
    except redis.RedisError:
        log.warning("could not announce %s to waiting requests; they notice within 1 s", what)


def _subscribe(channel: str) -> redis.client.PubSub | None:
    try:
        pubsub = redis_client().pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel)
    except redis.RedisError:
        return None
    return pubsub


def finished_publish(*, action_id: Any) -> None:
    """Tell the subscribers of this action's channel that it ended."""
    _publish(_channel(action_id), f"the end of action {action_id}")


def finished_subscribe(*, action_id: Any) -> redis.client.PubSub | None:
    """A subscription to this action's end, or None when Redis is not reachable. Subscribe *before*
    reading the state, so an end between the read and the wait cannot be missed."""
    return _subscribe(_channel(action_id))


def run_changed_publish(*, run_id: Any) -> None:
    """Tell the subscribers of a runbook run that its state or a step's changed (committed)."""
    _publish(_run_channel(run_id), f"a change of runbook run {run_id}")


def run_changed_subscribe(*, run_id: Any) -> redis.client.PubSub | None:
    """A subscription to a runbook run's changes (None without Redis); subscribe before reading."""
    return _subscribe(_run_channel(run_id))

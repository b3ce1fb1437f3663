"""``GET /api/v1/actions/<id>?wait=N``: answer when the action ends (or after N seconds), so a bot does not
have to poll and pay half a polling interval on every action.

The worker's ``action_finished`` (sent after the finishing transaction commits) is published on a Redis
channel per action; a waiting request subscribes *before* it reads the state, so a finish between the two
cannot be missed, and re-reads the state every second anyway (a lost message or a Redis outage only costs
that second). Each waiting request holds one of the web process's threads, so a process serves at most
``API_WAIT_SLOTS`` waits at once; beyond that the answer comes at once, as without ``wait``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from django.conf import settings

from controlplane import webgate
from controlplane.actions.models import TERMINAL_STATES, ActionRun
from controlplane.redis import redis_client

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 30
_RECHECK_SECONDS = 1.0
_slots = threading.BoundedSemaphore(settings.CONTROLPLANE["API_WAIT_SLOTS"])


def _channel(action_id: Any) -> str:
    return f"controlplane:action-finished:{action_id}"


def publish_finished(sender: Any, action_id: Any, **kwargs: Any) -> None:
    """``action_finished`` receiver: wake the requests waiting for this action."""
    try:
        redis_client().publish(_channel(action_id), "finished")
    except redis.RedisError:
        log.warning("could not announce the end of action %s to waiting requests; they notice within 1 s", action_id)


def _ended(action_id: Any) -> bool:
    state = ActionRun.objects.filter(id=action_id).values_list("state", flat=True).first()
    return state is None or state in TERMINAL_STATES


def wait_until_finished(action_id: Any, timeout: float) -> bool:
    """Block until the action is in a terminal state or ``timeout`` seconds passed. False when no waiting
    slot was free (the caller answers at once)."""
    if not _slots.acquire(blocking=False):
        return False
    try:
        # The wait lets go of the process's request gate (controlplane/webgate.py): other requests run
        # meanwhile (its few state reads too).
        with webgate.outside():
            _wait(action_id, time.monotonic() + timeout)
        return True
    finally:
        _slots.release()


def _wait(action_id: Any, deadline: float) -> None:
    try:
        pubsub = redis_client().pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(_channel(action_id))
    except redis.RedisError:
        pubsub = None
    try:
        while not _ended(action_id):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            step = min(remaining, _RECHECK_SECONDS)
            if pubsub is None:
                time.sleep(step)
                continue
            try:
                if pubsub.get_message(timeout=step) is not None:
                    continue  # re-read: the message says it ended
            except redis.RedisError:
                pubsub = None
    finally:
        if pubsub is not None:
            pubsub.close()

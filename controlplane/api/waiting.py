"""``GET /api/v1/actions/<id>?wait=N``: answer when the action ends (or after N seconds), so a bot does not
have to poll and pay half a polling interval on every action. ``GET /api/v1/runbook-runs/<id>?wait=N`` waits
the same way, in the same slots, until the run needs a person or ended (``runbooks.selectors.run_busy``): a
run's changes are announced too, and each wakes that wait to read the run again.

The end of an action is announced on Redis once its finishing transaction committed
(``controlplane/actions/notices.py``); a waiting request subscribes *before* it reads the state, so an
end between the two cannot be missed, takes the message as the answer (no second read of the state:
the caller reads the whole action next anyway), and re-reads the state every second in case a message
was lost or Redis is away. Each waiting request holds one of the web process's threads, so a process
serves at most ``API_WAIT_SLOTS`` waits at once; beyond that the answer comes at once, as without ``wait``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from redis.client import PubSub

from controlplane.actions import notices
from controlplane.actions.models import TERMINAL_STATES, ActionRun
from runbooks.selectors import run_busy

MAX_WAIT_SECONDS = 30
_RECHECK_SECONDS = 1.0
_slots = threading.BoundedSemaphore(settings.CONTROLPLANE["API_WAIT_SLOTS"])


def _ended(action_id: Any) -> bool:
    state = ActionRun.objects.filter(id=action_id).values_list("state", flat=True).first()
    return state is None or state in TERMINAL_STATES


def wait_until_finished(action_id: Any, timeout: float) -> bool:
    """Block until the action is in a terminal state or ``timeout`` seconds passed. False when no waiting
    slot was free (the caller answers at once)."""
    return _in_slot(
        lambda: _ended(action_id),
        time.monotonic() + timeout,
        subscribe=lambda: notices.finished_subscribe(action_id=action_id),
        recheck=_RECHECK_SECONDS,
        message_answers=True,
    )


def wait_while_run_busy(run_id: Any, timeout: float) -> bool:
    """Block while the system carries the runbook run forward, at most ``timeout`` seconds. False when no
    waiting slot was free (the caller answers at once). A change is not yet an answer (the run may still be
    busy): each wakes the wait to read the run again."""
    return _in_slot(
        lambda: not run_busy(run_id),
        time.monotonic() + timeout,
        subscribe=lambda: notices.run_changed_subscribe(run_id=run_id),
        recheck=_RECHECK_SECONDS,
        message_answers=False,
    )


def _in_slot(
    done: Callable[[], bool],
    deadline: float,
    *,
    subscribe: Callable[[], PubSub | None],
    recheck: float,
    message_answers: bool,
) -> bool:
    if not _slots.acquire(blocking=False):
        return False
    try:
        _wait(done, deadline, subscribe(), recheck, message_answers)
        return True
    finally:
        _slots.release()


def _wait(
    done: Callable[[], bool], deadline: float, pubsub: PubSub | None, recheck: float, message_answers: bool
) -> None:
    try:
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            step = min(remaining, recheck)
            if pubsub is None:
                time.sleep(step)
                continue
            try:
                if pubsub.get_message(timeout=step) is not None and message_answers:
                    return  # published after the end committed: the caller's read sees it
            except redis.RedisError:
                pubsub = None
    finally:
        if pubsub is not None:
            pubsub.close()

"""What happens to actions, for subscribers (incident timelines, Slack updates, runbook steps).

``actions/`` never imports its interfaces nor the apps that follow actions; they connect here. A request is
announced inside the transaction that writes it; decisions and ends after theirs commits.
"""

from django.dispatch import Signal

# Sent with ``action`` (the ActionRun just written, its target loaded) and ``requester`` (a name) inside the
# transaction that writes a new request, once its audit events are written. What a receiver writes commits or
# rolls back with the request: an incident's timeline never names a request that was not made, nor misses one
# that was. Receivers write rows only (no network, no Celery): a receiver that raises refuses the request.
action_requested = Signal()

# Sent with ``action_id``, ``incident_id`` (None when the action was not taken for an incident), ``channel``
# (the one it was requested through), ``requires_approval`` and ``verb`` once an action reached a terminal state. The
# facts let a receiver that has nothing to do for this action return without a query: they run in the worker
# right after the end is announced, while a waiting bot's request reads the action.
action_finished = Signal()

# Sent with ``action_id``, ``decision`` ("approved" or "rejected"), ``approver`` (a name) and ``comment``
# once a second person's decision on an action committed.
action_decided = Signal()

# Sent with ``action_id``, ``incident_id`` and ``attempt`` once a worker's claim of an attempt committed (the
# action is ``running``). Sent by the worker before it calls the connector: receivers enqueue, never wait.
action_started = Signal()

# Sent with ``action_id``, ``incident_id``, ``done`` and ``total`` once a running attempt's changed progress was
# stored (at most every ``LOG_FLUSH_SECONDS``, from the attempt's lease thread). Receivers throttle what they
# show; they must be quick and never raise (the lease thread renews the lease too).
action_progress = Signal()

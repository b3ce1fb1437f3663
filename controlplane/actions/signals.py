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

# Sent with ``action_id``, ``incident_id`` (None when the action was not taken for an incident) and ``channel``
# (the one it was requested through) once an action reached a terminal state. The two facts let a receiver
# that has nothing to do for this action return without a query: they run in the worker right after the end
# is announced, while a waiting bot's request reads the action.
action_finished = Signal()

# Sent with ``action_id``, ``decision`` ("approved" or "rejected"), ``approver`` (a name) and ``comment``
# once a second person's decision on an action committed.
action_decided = Signal()

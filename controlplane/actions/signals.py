"""Action outcomes for subscribers (incident timelines, Slack updates, runbook steps).

``actions/`` never imports its interfaces; they connect here. Sent after the transaction commits.
"""

from django.dispatch import Signal

# Sent with ``action_id``, ``incident_id`` (None when the action was not taken for an incident) and ``channel``
# (the one it was requested through) once an action reached a terminal state. The two facts let a receiver
# that has nothing to do for this action return without a query: they run in the worker right after the end
# is announced, while a waiting bot's request reads the action.
action_finished = Signal()

# Sent with ``action_id``, ``decision`` ("approved" or "rejected"), ``approver`` (a name) and ``comment``
# once a second person's decision on an action committed.
action_decided = Signal()

"""Action outcomes for subscribers (incident timelines, Slack updates, runbook steps).

``actions/`` never imports its interfaces; they connect here. Sent after the transaction commits.
"""

from django.dispatch import Signal

# Sent with ``action_id`` once an action reached a terminal state.
action_finished = Signal()

# Sent with ``action_id``, ``decision`` ("approved" or "rejected"), ``approver`` (a name) and ``comment``
# once a second person's decision on an action committed.
action_decided = Signal()

"""What happens to incidents, for subscribers (Slack messages). ``incidents/`` never imports them.

Both are sent inside the transaction that writes the change, with ids only. A receiver with work to do
registers it for the commit (``transaction.on_commit``), so it never reports a change that rolled back, and
one with nothing to do returns without a query. Receivers must not raise (that would refuse the change) nor
wait on the network.
"""

from django.dispatch import Signal

# Sent with ``incident_id`` when a new incident (not a repeat of an open one) is written.
incident_opened = Signal()

# Sent with ``incident_id`` and ``change`` when an incident changes: "status" (with ``status``, the new one,
# and ``actor``, a name) or "log" (the failed try's log excerpt was attached).
incident_changed = Signal()

"""The review record follows actions: a succeeded ``quarantine-review`` action becomes a review, and the end
of a disposition's action records the disposition (``actions/`` does not know quarantine; it announces ends
through ``action_finished``)."""

from __future__ import annotations

import logging
from typing import Any

from controlplane.actions.models import ActionRun
from controlplane.audit import context
from controlplane.audit.context import Channel
from controlplane.quarantine import services

log = logging.getLogger(__name__)

_VERBS = (services.REVIEW_VERB, *services.DISPOSITION_VERBS.values())


def on_action_finished(sender: Any, action_id: Any, verb: str = "", **kwargs: Any) -> None:
    """Make the review or record the disposition of a finished quarantine action (no query for any other
    verb). Runs after the action's end committed: a failure here is logged, never raised into the worker
    (the action's end stands; the review can be made again by requesting the review once more)."""
    if verb not in _VERBS:
        return
    action = (
        ActionRun.objects.select_related("target__connection__environment")
        .filter(id=action_id, verb__in=_VERBS)
        .first()
    )
    if action is None:
        return
    try:
        with context.change_context(
            channel=Channel.SYSTEM, actor_name="control plane", request_id=action.request_id or None
        ):
            if action.verb == services.REVIEW_VERB:
                services.review_create_from_outcome(action=action)
            else:
                services.disposition_record_outcome(action=action)
    except Exception:
        log.exception("quarantine: could not record the end of action %s (%s)", action.id, action.verb)

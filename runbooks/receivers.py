"""The runner subscribes to action outcomes: an action step completes when its action ends."""

from __future__ import annotations

import logging
from typing import Any

from controlplane.audit.context import Channel
from runbooks import services

log = logging.getLogger(__name__)


def action_step_finished(sender: Any, action_id: Any, channel: str, **kwargs: Any) -> None:
    if channel != Channel.RUNBOOK:
        return  # a step requests its action through the runbook channel (``step_act``): not a step's action
    try:
        services.step_action_finished(action_id=action_id)
    except Exception:
        # Said loudly, and healed: the run's next advance (the beat sweep, a page view) reconciles the step.
        log.exception("runbook step of action %s not updated; the stalled-run sweep will reconcile it", action_id)

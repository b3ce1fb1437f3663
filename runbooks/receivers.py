"""The runner subscribes to action outcomes: an action step completes when its action ends."""

from __future__ import annotations

from typing import Any

from runbooks import services


def action_step_finished(sender: Any, action_id: Any, **kwargs: Any) -> None:
    services.step_action_finished(action_id=action_id)

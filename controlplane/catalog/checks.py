"""Running read-only checks on catalog targets (diagnostics, runbook check steps, the dashboard)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from connectors.base import ConnectorError, Findings
from connectors.registry import get_connector_class
from controlplane.actions import policy
from controlplane.catalog.selectors import target_get
from controlplane.catalog.services import connector_for, pydantic_message, target_ref
from controlplane.errors import InvalidInput, Unavailable


def check_run(*, actor: Any, target_key: str, check: str, params: Mapping[str, Any]) -> Findings:
    """Run one read-only check on a catalog target and return its findings (nothing is written).

    Checks never change the external system (the connector runs them in read-only sessions), so every
    role from viewer up may run them. Errors come back as ServiceErrors with the connector's message.
    """
    policy.require_role(actor, "viewer", "running a check")
    target = target_get(target_key)
    try:
        connector_cls = get_connector_class(target.connection.kind)
    except ConnectorError as exc:
        raise InvalidInput(exc.message) from None
    check_cls = connector_cls.check_class(check)
    if check_cls is None or target.kind not in check_cls.target_kinds:
        offered = [c.name for c in connector_cls.checks if target.kind in c.target_kinds]
        raise InvalidInput(f"target {target.key} ({target.kind}) does not offer check {check!r}; it offers {offered}")
    try:
        typed = check_cls.params_model.model_validate(dict(params))
    except ValidationError as exc:
        raise InvalidInput(f"invalid params for {check}: {pydantic_message(exc)}") from None
    try:
        return connector_for(target.connection).check(check).run(target_ref(target), typed)
    except ConnectorError as exc:
        if exc.transient:
            raise Unavailable(f"{target.connection.name} did not answer: {exc.message}") from None
        raise InvalidInput(f"check {check} on {target.key} failed: {exc.message}") from None

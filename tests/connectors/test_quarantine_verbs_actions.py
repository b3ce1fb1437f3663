"""The quarantine dispositions through the control plane's own request service and runner (in this process,
on the test database): the params and the approved plan make the round trip through JSON and the verbs act
on them; a discard (risk high) waits for a second person."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors.quarantine import ledger
from controlplane.actions import services
from controlplane.actions.models import ActionRun, ActionState
from controlplane.actions.runner import action_execute
from controlplane.audit.context import Channel, change_context
from controlplane.catalog import services as catalog_services
from controlplane.errors import InvalidInput
from tests.quarantine_qwrite import BAD_PRICE, D14, D15, NULL_CUSTOMER, local_connector, read_rows, seed_source, vpath


@pytest.fixture
def source(db: Any, tmp_path: Path) -> dict[str, Any]:
    root = str(tmp_path / "silver" / "base")
    seed_source(local_connector(root).store)
    with change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        out: dict[str, Any] = {"root": root}
        for name, protected in (("dev", False), ("prod", True)):
            env = catalog_services.environment_create(name=name, protected=protected)
            conn = catalog_services.connection_create(
                name=f"silver-{name}", kind="quarantine", environment=env, config={"root": root}
            )
            catalog_services.target_create(
                key=f"{name}.silver.orders", kind="quarantine_table", connection=conn, locator={"table": "orders"}
            )
    return out


def request(actor: Any, verb: str, target: str, params: dict[str, Any]) -> Any:
    with change_context(channel=Channel.API, user=actor):
        return services.action_request(
            actor=actor, verb=verb, target_key=target, params=params, reason="weekly quarantine review"
        ).action


def test_release_runs_through_the_request_service_and_the_runner(
    source: dict[str, Any], actors: Any, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    params = {"reason": NULL_CUSTOMER, "from_date": "2025-01-14", "to_date": "2025-01-15"}
    with django_capture_on_commit_callbacks(execute=False):
        action = request(actors["responder"], "quarantine-release", "dev.silver.orders", params)
    assert action.state == ActionState.QUEUED
    assert action.plan["counts"]["rows"] == 6 and action.plan["risk"] == "medium"

    monkeypatch.setattr("controlplane.actions.runner.close_old_connections", lambda: None)
    with django_capture_on_commit_callbacks(execute=True):
        action_execute(action_id=str(action.id))

    action.refresh_from_db()
    assert action.state == ActionState.SUCCEEDED, (action.error, action.verification)
    assert action.verification["ok"] is True
    assert action.outcome["details"]["rows"] == 6 and action.outcome["details"]["table"] == "orders"
    store = local_connector(source["root"]).store
    assert len(read_rows(store, vpath(store, "orders", D14, f"released-{action.id}.parquet"))) == 5
    assert len(read_rows(store, vpath(store, "orders", D15, f"released-{action.id}.parquet"))) == 1
    assert ledger.read(store, ledger.RELEASED, str(action.id))["state"] == "done"  # type: ignore[index]


def test_a_discard_in_production_waits_for_approval_and_deletes_nothing_yet(
    source: dict[str, Any], actors: Any, django_capture_on_commit_callbacks: Any
) -> None:
    store = local_connector(source["root"]).store
    before = sorted(store.fs.find(store.root))
    params = {"reason": BAD_PRICE, "from_date": "2025-01-14", "to_date": "2025-01-14"}
    with django_capture_on_commit_callbacks(execute=True):
        action = request(actors["responder"], "quarantine-discard", "prod.silver.orders", params)
    assert action.state == ActionState.AWAITING_APPROVAL
    assert action.plan["risk"] == "high" and action.plan["counts"]["rows"] == 2
    assert sorted(store.fs.find(store.root)) == before


def test_a_release_with_nothing_to_release_or_bad_days_is_refused_at_request(
    source: dict[str, Any], actors: Any
) -> None:
    params = {"reason": "no such reason", "from_date": "2025-01-14", "to_date": "2025-01-15"}
    with pytest.raises(
        InvalidInput, match=r"cannot plan quarantine-release on dev\.silver\.orders: nothing to release"
    ):
        request(actors["responder"], "quarantine-release", "dev.silver.orders", params)
    params = {"reason": NULL_CUSTOMER, "from_date": "2025-01-15", "to_date": "2025-01-14"}
    with pytest.raises(InvalidInput, match=r"invalid params for quarantine-release: .*after to_date"):
        request(actors["responder"], "quarantine-release", "dev.silver.orders", params)
    assert not ActionRun.objects.exists()

"""The API answers every request its own schema allows without a server error and as its schema says
(schemathesis over /api/schema/; bench/api_fuzz.py runs the same over 5,000+ cases)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.fuzzing import fuzz_api

pytestmark = pytest.mark.django_db(transaction=True)

# Cases per operation: ~25 keeps the run near 30 s on the 2-core machine.
EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "25"))
DEV_MART = "dev.weather.daily_weather_aggregates"
PROD_MART = "prod.weather.daily_weather_aggregates"


def fuzz_world(actors: dict[str, Any]) -> dict[str, Any]:
    """An admin's all-scopes token and one real object of each kind, whose ids the fuzzer mixes in."""
    from controlplane.actions import services as action_services
    from controlplane.api.models import SCOPES
    from controlplane.api.services import api_token_create
    from controlplane.audit.context import Channel, change_context
    from controlplane.incidents.services import alert_ingest_airflow
    from runbooks import services as runbook_services
    from runbooks.loader import LIBRARY, parse_file

    with change_context(channel=Channel.SYSTEM, actor_name="fuzz-setup"):
        runbook_services.runbooks_load(parsed=[parse_file(LIBRARY / "004-rehydrate-mart.yaml")])
        incident = alert_ingest_airflow(
            payload={
                "source": "airflow",
                "dag_id": "data_ingestion_bronze",
                "task_id": "ingest_orders",
                "run_id": "scheduled__2026-11-20T00:00:00+00:00",
                "try_number": 1,
                "state": "failed",
                "exception": "orders API answered HTTP 503",
            }
        ).incident
    # Awaiting approval on the protected target: approving it queues a refresh no worker runs here.
    action = action_services.action_request(
        actor=actors["responder"],
        verb="refresh-mart",
        target_key=PROD_MART,
        params={},
        reason="fuzz",
        idempotency_key=None,
    ).action
    run = runbook_services.run_start(actor=actors["responder"], runbook="004-rehydrate-mart", params={"mart": DEV_MART})
    _, token = api_token_create(user=actors["admin"], name="fuzz", scopes=sorted(SCOPES))
    steps = [s.step_id for s in run.steps.all()]
    return {
        "token": token,
        "known": {
            "incident_id": [incident.pk],
            "move": ["acknowledge", "mitigate", "resolve"],
            "action_id": [str(action.id)],
            "key": [DEV_MART, PROD_MART],
            "what": ["tasks", "failed_runs"],
            "slug": ["004-rehydrate-mart"],
            "run_id": [run.pk],
            "step_id": steps,
            "command": ["complete", "approve", "act", "skip", "retry"],
        },
        "bodies": {
            "POST /api/v1/actions": [{"verb": "refresh-mart", "target": DEV_MART, "params": {}, "reason": "fuzz"}],
            "POST /api/v1/actions/preview": [{"verb": "refresh-mart", "target": DEV_MART, "params": {}}],
        },
        "known_query": {"GET /api/v1/actions/{action_id}": {"wait": 0}},
    }


def test_the_api_keeps_to_its_schema_under_fuzzing(live_server: Any, catalog: Any, actors: Any) -> None:
    world = fuzz_world(actors)
    result = fuzz_api(
        f"{live_server.url}/api/schema/",
        token=world["token"],
        examples=EXAMPLES,
        known=world["known"],
        bodies=world["bodies"],
        known_query=world["known_query"],
    )
    print(result.line())
    assert result.cases >= 20 * EXAMPLES // 2
    assert result.server_errors == 0, "\n\n".join(result.failures)
    assert result.violations == 0, "\n\n".join(result.failures)
    assert result.by_status[200] > 0 and result.by_status[400] > 0  # both sides of validation were reached

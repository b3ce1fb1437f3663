"""The API answers every request its own schema allows without a server error and as its schema says
(schemathesis over /api/schema/; bench/api_fuzz.py runs the same over 5,000+ cases)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.fuzzing import fuzz_api, fuzz_world

pytestmark = pytest.mark.django_db(transaction=True)

# Cases per operation: ~25 keeps the run near 30 s on the 2-core machine.
EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "25"))
DEV_MART = "dev.weather.daily_weather_aggregates"
PROD_MART = "prod.weather.daily_weather_aggregates"


def test_the_api_keeps_to_its_schema_under_fuzzing(live_server: Any, catalog: Any, actors: Any) -> None:
    # The action awaits approval on the protected target: approving it queues a refresh no worker runs here.
    world = fuzz_world(
        admin=actors["admin"],
        responder=actors["responder"],
        action_target=PROD_MART,
        run_mart=DEV_MART,
        keys=[DEV_MART, PROD_MART],
        launch_targets=[DEV_MART],
    )
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

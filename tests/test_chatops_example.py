"""examples/chatops_bot.py, run as a subprocess against a live server of the product with a real worker, the
demo's runbook library and the weather catalog: it posts an alert, walks the suggested runbook to the end or
launches an action with an Idempotency-Key, through the public API only."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from django.core.management import call_command

from controlplane.actions.models import ActionRun
from controlplane.api.services import api_token_create
from controlplane.audit.models import AuditEvent
from controlplane.incidents.models import Incident
from runbooks.models import RunbookRun
from tests.conftest import ROOT

MART = "dev.weather.daily_weather_aggregates"
SCOPES = ["alerts:write", "incidents:read", "runbooks:read", "runbooks:write", "actions:read", "actions:write"]


def run_bot(url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTROLPLANE_URL": url, "CONTROLPLANE_TOKEN": token}
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "chatops_bot.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture
def bot_token(actors: Any) -> str:
    return api_token_create(user=actors["responder"], name="chatops", scopes=SCOPES)[1]


@pytest.fixture
def demo_library(transactional_db: Any) -> None:
    call_command("load_runbooks", verbosity=0)  # the whole library, as the demo loads it


def test_the_example_bot_walks_the_suggested_runbook_to_the_end(
    live_server: Any, catalog: Any, actors: Any, bot_token: str, demo_library: Any, worker_factory: Any
) -> None:
    worker_factory()
    args = ["--source", "grafana", "--target", MART, "--summary", "daily_weather_aggregates is stale"]
    done = run_bot(live_server.url, bot_token, *args, "--runbook", "004-rehydrate-mart", "--confirm")
    assert done.returncode == 0, done.stdout + done.stderr
    incident = Incident.objects.get()
    assert incident.source == "grafana" and incident.alert_type == "freshness"
    assert f"INC-{incident.pk} opened" in done.stdout
    run = RunbookRun.objects.get()
    assert run.state == "completed" and run.incident_id == incident.pk and run.channel == "api"
    assert f"run {run.pk} completed" in done.stdout
    action = ActionRun.objects.get()
    assert action.verb == "refresh-mart" and action.state == "succeeded" and action.incident_id == incident.pk
    trail = list(AuditEvent.objects.order_by("seq").values_list("event", "channel", "actor_name"))
    events = [event for event, _, _ in trail]
    for expected in ("incident.opened", "runbook_run.started", "action.requested", "runbook_run.completed"):
        assert expected in events, events
    assert ("runbook_run.started", "api", "rita") in trail
    assert (
        events.index("runbook_run.started") < events.index("action.requested") < events.index("runbook_run.completed")
    )

    # The same alert again: counted on the open incident; the ended run is not joined, a new one is walked.
    again = run_bot(live_server.url, bot_token, *args, "--runbook", "004-rehydrate-mart", "--confirm")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "counted on (alert #2)" in again.stdout
    assert Incident.objects.count() == 1 and RunbookRun.objects.filter(state="completed").count() == 2


def test_the_example_bot_launches_an_action_once_and_follows_it(
    live_server: Any, catalog: Any, actors: Any, bot_token: str, demo_library: Any, worker_factory: Any
) -> None:
    worker_factory()
    args = [
        "--source",
        "grafana",
        "--target",
        MART,
        "--summary",
        "stale",
        "--prefer",
        "action",
        "--verb",
        "refresh-mart",
    ]
    first = run_bot(live_server.url, bot_token, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    action = ActionRun.objects.get()
    assert action.state == "succeeded" and str(action.idempotency_key).startswith("chatops-inc-")
    assert f"action {action.id} succeeded" in first.stdout
    # The same alert again: the Idempotency-Key returns the same action instead of a second refresh.
    second = run_bot(live_server.url, bot_token, *args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert ActionRun.objects.count() == 1 and f"action {action.id} succeeded" in second.stdout
    assert AuditEvent.objects.filter(event="action.requested").count() == 1


def test_the_example_bot_reports_a_refusal(live_server: Any, catalog: Any, actors: Any, demo_library: Any) -> None:
    viewer_token = api_token_create(user=actors["viewer"], name="chatops", scopes=SCOPES)[1]
    refused = run_bot(live_server.url, viewer_token, "--target", MART, "--summary", "stale")
    assert refused.returncode == 2
    assert "HTTP 403" in refused.stdout and "responder role" in refused.stdout
    typo = run_bot(live_server.url, api_token_create(user=actors["responder"], name="t", scopes=SCOPES)[1],
                   "--target", "dev.weather.daily_weather_aggregate", "--summary", "stale")  # fmt: skip
    assert typo.returncode == 2 and f"closest: {MART}" in typo.stdout
    assert not Incident.objects.exists()

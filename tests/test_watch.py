"""The connectors' watch (beat, every WATCH_INTERVAL_SECONDS): each connection whose connector overrides
``Connector.alerts`` is asked about its catalog targets, and each problem goes through the generic alert intake:
one incident per problem while it is open (a repeat counts on it), suggesting the runbooks for its alert type; a
connection that fails is recorded on its health and does not stop the others. The ``cptest`` plugin reports
what its state folder lists."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from pydantic import ValidationError

from connectors.base import WatchAlert
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.catalog import services as catalog_services
from controlplane.catalog.models import Connection
from controlplane.incidents.models import Incident, IncidentEvent
from controlplane.incidents.services import connections_watch
from controlplane.incidents.tasks import watch_connections
from runbooks.selectors import runbooks_for_incident
from tests.conftest import CPTEST_TOKEN
from tests.plugins.cptest import records

pytestmark = pytest.mark.django_db

FAILED = {
    "key": "lab.jobs.load:failed:run-7",
    "alert_type": "cptest.job_failed",
    "severity": "high",
    "summary": "job load failed: division by zero",
    "target": "lab.jobs.load",
    "details": {"run_id": "run-7", "error": "division by zero"},
}


def report(state: Path, *alerts: dict[str, Any]) -> None:
    (state / "alerts.json").write_text(json.dumps(list(alerts)))


def test_a_problem_opens_one_incident_and_a_repeat_counts_on_it(cptest: Any) -> None:
    report(cptest["state_cptest-a"], FAILED)

    [first, quiet] = connections_watch()

    assert (first.connection, first.alerts, first.opened, first.error) == ("cptest-a", 1, 1, "")
    assert (quiet.connection, quiet.alerts) == ("cptest-b", 0)
    assert records(cptest["state_cptest-a"], "watched.jsonl") == [{"targets": ["lab.jobs.load", "lab.jobs.publish"]}]
    incident = Incident.objects.get()
    assert (incident.source, incident.alert_type, incident.severity) == ("cptest", "cptest.job_failed", "high")
    assert incident.fingerprint == "alert:cptest:lab.jobs.load:failed:run-7"
    assert incident.title == "job load failed: division by zero"
    assert [t.key for t in incident.targets.all()] == ["lab.jobs.load"]
    assert incident.details["details"] == {"run_id": "run-7", "error": "division by zero"}
    opened = AuditEvent.objects.get(event="incident.opened", object_id=str(incident.pk))
    assert (opened.actor_name, opened.channel) == ("watch", "schedule")
    assert IncidentEvent.objects.get(incident=incident).actor_name == "watch"

    [again, _] = connections_watch()

    assert (again.alerts, again.opened) == (1, 0)
    incident.refresh_from_db()
    assert Incident.objects.count() == 1 and incident.alert_count == 2


def test_a_new_problem_on_the_same_target_is_its_own_incident(cptest: Any) -> None:
    report(cptest["state_cptest-a"], FAILED)
    connections_watch()
    report(cptest["state_cptest-a"], FAILED, {**FAILED, "key": "lab.jobs.load:failed:run-8"})
    [watched, _] = connections_watch()
    assert (watched.alerts, watched.opened) == (2, 1)
    assert Incident.objects.count() == 2


def test_a_failing_connection_is_recorded_on_its_health_and_the_others_still_run(
    cptest: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (cptest["state_cptest-a"] / "down").write_text(f"login refused for token {CPTEST_TOKEN}")
    paused = {**FAILED, "key": "vault.jobs.publish:paused", "alert_type": "cptest.job_paused"}
    report(cptest["state_cptest-b"], {**paused, "target": "vault.jobs.publish", "severity": "medium"})

    with caplog.at_level(logging.WARNING):
        [failed, fine] = connections_watch()

    assert failed.connection == "cptest-a" and failed.error == "login refused for token ********"
    assert (fine.connection, fine.alerts, fine.opened) == ("cptest-b", 1, 1)
    assert Incident.objects.get().alert_type == "cptest.job_paused"
    down = Connection.objects.get(name="cptest-a")
    assert down.health_ok is False and down.health_checked_at is not None
    assert down.health_summary == "watch failed: login refused for token ********"
    assert "login refused" in caplog.text
    assert CPTEST_TOKEN not in caplog.text + down.health_summary


def test_an_alert_the_intake_refuses_is_logged_and_does_not_hide_the_others(
    cptest: Any, caplog: pytest.LogCaptureFixture
) -> None:
    stray = {**FAILED, "key": "stray", "target": "vault.jobs.load"}  # not one of this connection's targets
    report(cptest["state_cptest-a"], stray, FAILED)
    with caplog.at_level(logging.WARNING):
        [watched, _] = connections_watch()
    assert (watched.alerts, watched.opened, watched.error) == (2, 1, "")
    assert Incident.objects.get().fingerprint.endswith(":run-7")
    assert "'stray'" in caplog.text


def test_a_watch_alert_cannot_carry_a_severity_the_intake_does_not_know() -> None:
    with pytest.raises(ValidationError, match="severity"):
        WatchAlert.model_validate({**FAILED, "severity": "error"})


RUNBOOK = """\
id: 900-job-failed
title: A job failed
version: 1
applies_to: {alert_types: [cptest.job_failed]}
steps:
  - id: look
    kind: manual
    title: Read the job's error
"""


def test_the_incident_suggests_the_runbooks_for_its_alert_type(cptest: Any, api_for: Any) -> None:
    from runbooks import services as runbook_services
    from runbooks.loader import parse_text

    with change_context(channel=Channel.SYSTEM, actor_name="test"):
        runbook_services.runbooks_load(parsed=[parse_text(RUNBOOK, "900-job-failed.yaml")])
    report(cptest["state_cptest-a"], FAILED)
    connections_watch()
    incident = Incident.objects.get()
    assert [v.runbook.slug for v in runbooks_for_incident(incident)] == ["900-job-failed"]
    shown = api_for("viewer").get(f"/api/v1/incidents/{incident.pk}").json()
    assert [r["id"] for r in shown["suggested_runbooks"]] == ["900-job-failed"]


def test_connections_whose_connector_has_no_watch_are_not_asked(cptest: Any, catalog: Any) -> None:
    # A Postgres connection whose secret does not resolve here: building its connector would fail and be recorded.
    with change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        broken = catalog_services.connection_create(
            name="weather-elsewhere",
            kind="postgres",
            environment=catalog["dev"],
            config={"host": "127.0.0.1", "port": 5432, "dbname": "weather", "user": "nobody"},
            secret_refs={"password": "env:CP_TEST_NOT_SET_ANYWHERE"},
        )
        catalog_services.target_create(
            key="dev.elsewhere.mart", kind="matview", connection=broken, locator={"schema": "mart", "name": "m"}
        )
    assert [r.connection for r in connections_watch()] == ["cptest-a", "cptest-b"]
    broken.refresh_from_db()
    assert broken.health_ok is None


def test_the_watch_runs_on_the_beat_every_watch_interval(cptest: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["watch-connections"]
    assert entry["task"] == watch_connections.name and entry["schedule"] == 300.0
    report(cptest["state_cptest-a"], FAILED)
    watch_connections.apply()  # the beat's task, run here: one pass
    assert Incident.objects.get().source == "cptest"

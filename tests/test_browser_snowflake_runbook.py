"""The 001 "task suspended" runbook in a real browser (Playwright + Debian Chromium) against the real server, a
real Celery worker and the sandbox's Snowflake emulator holding seed 001: the connectors' watch finds the
bronze-to-silver task graph left FAILED_AND_AUTO_SUSPENDED and opens an incident; the incident suggests
001-transformation-task-failure; started from it, the run reads the task's history and state (the failure's
message shown), the engineer says the task is suspended, previews the resume (a RETRY LAST of the failed run),
runs it, and the step shows it verified; the history after shows the run succeeded and the run completes.

The test saves a screenshot of its last page (``SCREENSHOT_DIR``, default var/screenshots).
"""

from __future__ import annotations

import os

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop in this thread

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from controlplane.audit.context import Channel, change_context
from controlplane.catalog.management.commands.seed_demo import SeedReport, seed_snowflake
from controlplane.incidents.models import Incident
from controlplane.incidents.services import connections_watch
from runbooks import services
from runbooks.loader import LIBRARY, parse_file
from runbooks.models import RunbookRun
from sandbox.snowflake.seed import FAILURE
from sandbox.snowflake.seed import seed as seed_001
from tests.test_browser import log_in
from tests.test_browser_runbooks import chromium, expect_step_state, step

ROOT = "dev.snowflake.task_bronze_to_silver_pos"
PASSWORD = "sandbox-password"  # the emulator takes any; the catalog keeps a reference to it
SLOW_MS = 90_000  # the retried graph run: three tasks on the emulator, polled by the worker


@pytest.fixture
def watched_incident(transactional_db: Any, monkeypatch: pytest.MonkeyPatch) -> Incident:
    """Seed 001 rebuilt on the emulator, the demo's Snowflake catalog, the 001 runbooks, and the incident one
    pass of the connectors' watch opened on the auto-suspended graph's root."""
    url = os.environ.get("SANDBOX_SNOWFLAKE_URL")
    if not url:
        pytest.fail("SANDBOX_SNOWFLAKE_URL is not set: start the sandbox (python -m sandbox.services start)")
    seed_001(url)
    monkeypatch.setenv("DEMO_SNOWFLAKE_PASSWORD", PASSWORD)
    with change_context(channel=Channel.SYSTEM, actor_name="test"):
        seed_snowflake(SeedReport(), url=url, password_ref="env:DEMO_SNOWFLAKE_PASSWORD")
        names = ("001-transformation-task-failure", "001-pipeline-status", "001-scd2-dimension-failure")
        services.runbooks_load(parsed=[parse_file(LIBRARY / f"{name}.yaml") for name in names])
    connections_watch()
    incident = Incident.objects.filter(alert_type="snowflake.task_failed", targets__key=ROOT).first()
    assert incident is not None, list(Incident.objects.values_list("alert_type", "title"))
    return incident


@pytest.mark.browser
def test_task_suspended_runbook_from_the_watch_incident_to_the_verified_resume(
    live_server: Any,
    actors: dict[str, Any],
    watched_incident: Incident,
    worker_factory: Any,
    request: pytest.FixtureRequest,
) -> None:
    incident = watched_incident
    worker = worker_factory(DEMO_SNOWFLAKE_PASSWORD=PASSWORD)
    base = live_server.url
    try:
        with chromium(request) as (_, page):
            log_in(page, base, "rita")
            page.goto(f"{base}/incidents/")
            page.get_by_role("link", name=re.compile(r"TASK_BRONZE_TO_SILVER_POS failed")).first.click()
            page.wait_for_url(f"{base}/incidents/{incident.pk}/")
            expect(page.locator("body")).to_contain_text("FAILED_AND_AUTO_SUSPENDED")
            page.get_by_role("link", name=re.compile(r"^Start .*Transformation task failure")).click()
            expect(page.get_by_label(re.compile(r"failing Snowflake task"))).to_have_value(ROOT)  # from the incident
            page.get_by_role("button", name="Start the run").click()
            page.wait_for_url(re.compile(r"/runs/\d+/$"))

            # the checks run by themselves in the worker, against the emulator
            expect_step_state(page, "airflow_failure", "skipped")
            expect_step_state(page, "task_history", "done")
            expect(step(page, "task_history")).to_contain_text(FAILURE)
            expect_step_state(page, "task_state", "done")
            expect(step(page, "task_state")).to_contain_text("FAILED_AND_AUTO_SUSPENDED")

            diagnose = step(page, "diagnose")
            diagnose.get_by_label("task suspended", exact=True).check()
            diagnose.get_by_role("button", name="Mark done").click()

            resume = step(page, "resume_task")
            # the seed's SQL beside the step
            expect(resume).to_contain_text("ALTER TASK DEV_STAGING.TASKS.task_bronze_to_silver_pos RESUME")
            resume.get_by_role("button", name="Preview").click()
            plan = resume.locator(".plan")
            expect(plan).to_contain_text("RETRY LAST")
            expect(plan).to_contain_text("FAILED_AND_AUTO_SUSPENDED")
            resume.get_by_role("button", name="Run").click()
            expect_step_state(page, "resume_task", "done", timeout=SLOW_MS)
            expect(step(page, "resume_task")).to_contain_text("verified")
            expect_step_state(page, "execute_task", "skipped")  # the resume retried the failed run already
            expect_step_state(page, "task_after", "done")
            expect(step(page, "task_after")).to_contain_text("SUCCEEDED")

            outcome = step(page, "outcome")
            outcome.get_by_label("recovered", exact=True).check()
            outcome.get_by_role("button", name="Mark done").click()
            expect(page.locator("#run-state")).to_have_text("completed")
        run = RunbookRun.objects.get(incident=incident)
        assert run.state == "completed"
        resume_row = run.steps.get(step_id="resume_task")
        assert resume_row.action is not None and resume_row.action.state == "succeeded"
        assert (resume_row.action.verification or {}).get("ok") is True
    except Exception:
        print(worker.output()[-4000:])
        raise

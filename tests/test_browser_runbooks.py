"""Guided runbooks in a real browser (Playwright + Debian Chromium) against the real server, a real Celery
worker, the sandbox Airflow and the weather warehouse in Postgres:

- the ingestion failure end to end: the sandbox DAG fails, its failure callback opens an incident, the
  incident suggests the ingestion runbook, its check shows the failed task, the clear's preview lists the
  failed and downstream tasks, the engineer runs it after fixing the source, the run succeeds, the step and
  the incident show it verified, and the incident is resolved;
- the mart rehydration runbook, walked from the library to its completion;
- an action step in the protected environment, approved by a second person.

Each test saves a screenshot of its last page (``SCREENSHOT_DIR``, default var/screenshots; CI lists them).
"""

from __future__ import annotations

import os

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop in this thread

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from controlplane.audit.context import Channel, change_context
from runbooks import services
from runbooks.loader import LIBRARY, parse_file
from runbooks.models import RunbookRun
from tests.conftest import airflow_set_variable
from tests.test_airflow import BRONZE, airflow_catalog, bronze_failure_alerted  # noqa: F401 (a fixture)
from tests.test_browser import CHROMIUM_ARGS, TIMEOUT_MS, log_in, playwright, screenshot_path

DEV_MART = "dev.weather.daily_weather_aggregates"
PROD_MART = "prod.weather.daily_weather_aggregates"
SLOW_MS = 120_000  # an Airflow run: scheduler pick-up and three tasks


@pytest.fixture
def library(transactional_db: Any) -> None:
    with change_context(channel=Channel.SYSTEM, actor_name="test"):
        names = ("000-ingestion-dag-failure", "004-rehydrate-mart")
        services.runbooks_load(parsed=[parse_file(LIBRARY / f"{name}.yaml") for name in names])


@contextmanager
def chromium(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Page]]:
    """A browser context and its first page; the last page shown is saved as the test's screenshot."""
    with playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        try:
            yield context, page
        finally:
            try:
                pages = [p for p in context.pages if not p.is_closed()]
                if pages:
                    pages[-1].screenshot(path=str(screenshot_path(request.node.name)), full_page=True)
            finally:
                browser.close()


def step(page: Page, step_id: str) -> Any:
    return page.locator(f"#step-{step_id}")


def expect_step_state(page: Page, step_id: str, state: str, timeout: int = TIMEOUT_MS) -> None:
    expect(step(page, step_id).locator("[data-testid=step-state]")).to_have_text(state, timeout=timeout)


def log_out(page: Page) -> None:
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login/"))


@pytest.mark.browser
def test_ingestion_failure_from_alert_to_resolved_incident(
    live_server: Any,
    airflow: Any,
    airflow_catalog: Any,  # noqa: F811 (the fixture imported above)
    actors: dict[str, Any],
    api_for: Any,
    library: Any,
    worker_factory: Any,
    request: pytest.FixtureRequest,
) -> None:
    worker = worker_factory(beat=True)
    with bronze_failure_alerted(airflow, live_server, api_for) as (run_id, incident):
        try:
            base = live_server.url
            with chromium(request) as (_, page):
                log_in(page, base, "rita")
                page.goto(f"{base}/incidents/")
                page.get_by_role("link", name=re.compile(rf"{BRONZE}\.ingest_orders failed")).first.click()
                page.wait_for_url(f"{base}/incidents/{incident.pk}/")
                page.get_by_role("link", name=re.compile(r"^Start .*[Ii]ngestion")).click()
                expect(page.get_by_label(re.compile(r"dag_run_id"))).to_have_value(run_id)
                page.get_by_role("button", name="Start the run").click()
                page.wait_for_url(re.compile(r"/runs/\d+/$"))

                # the first check runs by itself in the worker: the failed task, with the end of its log
                expect_step_state(page, "failed_tasks", "done")
                expect(step(page, "failed_tasks")).to_contain_text("ingest_orders")

                # the engineer fixes the source where users would (an Airflow Variable), then says so
                airflow_set_variable(airflow, "data_ingestion_bronze_fixed", "true")
                root = step(page, "root_cause")
                for item in root.locator("input[name=checked]").all():  # the runbook's checklist
                    item.check()
                root.get_by_label("source fixed").check()
                root.get_by_role("button", name="Mark done").click()

                # the clear: Preview lists the failed task and its downstream, then Run
                clear = step(page, "clear")
                clear.get_by_role("button", name="Preview").click()
                plan = clear.locator(".plan")
                expect(plan).to_contain_text(f"{run_id} / ingest_orders")
                expect(plan).to_contain_text(f"{run_id} / validate_ingestion")
                clear.get_by_role("button", name="Run").click()
                expect_step_state(page, "clear", "done", timeout=SLOW_MS)
                expect(step(page, "clear")).to_contain_text("verified")
                expect_step_state(page, "run_state", "done", timeout=SLOW_MS)
                expect(page.locator("#run-state")).to_have_text("completed", timeout=SLOW_MS)

                # the incident shows it, and is resolved
                page.get_by_role("link", name=re.compile(rf"INC-{incident.pk}")).first.click()
                page.wait_for_url(f"{base}/incidents/{incident.pk}/")
                expect(page.locator("body")).to_contain_text("clear verified")
                page.get_by_role("button", name="Resolve").click()
                expect(page.locator("body")).to_contain_text("resolved")
            incident.refresh_from_db()
            assert incident.status == "resolved"
            assert RunbookRun.objects.get(incident=incident).state == "completed"
        except Exception:
            print(worker.output()[-4000:])
            raise


@pytest.mark.browser
def test_mart_rehydration_runbook_walked_to_the_end(
    live_server: Any,
    catalog: Any,
    actors: dict[str, Any],
    library: Any,
    worker_factory: Any,
    request: pytest.FixtureRequest,
) -> None:
    worker = worker_factory()
    base = live_server.url
    try:
        with chromium(request) as (_, page):
            log_in(page, base, "rita")
            page.goto(f"{base}/runbooks/")
            page.get_by_role("row", name=re.compile("Rehydrate a mart")).get_by_role("link", name="Start").click()
            page.get_by_label(re.compile(r"materialized view to refresh")).select_option(DEV_MART)
            page.get_by_role("button", name="Start the run").click()
            page.wait_for_url(re.compile(r"/runs/\d+/$"))
            expect_step_state(page, "current_state", "done")
            expect(step(page, "current_state")).to_contain_text("populated")
            expect_step_state(page, "blocking", "skipped")

            refresh = step(page, "refresh")
            refresh.get_by_role("button", name="Preview").click()
            expect(refresh.locator(".plan")).to_contain_text("mart.daily_weather_aggregates")
            refresh.get_by_role("button", name="Run").click()
            expect_step_state(page, "refresh", "done", timeout=60_000)
            expect_step_state(page, "after_refresh", "done")

            # by keyboard alone: Space ticks, Tab moves, Enter submits; the focus follows to the next step
            days = step(page, "last_days")
            days.get_by_label("Every day of the last 7 is present").focus()
            page.keyboard.press("Space")
            page.keyboard.press("Tab")
            page.keyboard.press("Space")
            page.keyboard.press("Tab")  # the first outcome radio: "complete"
            page.keyboard.press("Space")
            expect(days.get_by_label("complete", exact=True)).to_be_checked()
            days.get_by_label(re.compile("Note")).focus()
            page.keyboard.press("Enter")
            expect_step_state(page, "last_days", "done")
            monitor_done = step(page, "monitor").get_by_role("button", name="Mark done")
            note = step(page, "monitor").get_by_label(re.compile("Note"))
            expect(note).to_be_focused()
            page.keyboard.type("refresh took under a second")
            page.keyboard.press("Tab")
            expect(monitor_done).to_be_focused()
            page.keyboard.press("Enter")
            expect(page.locator("#run-state")).to_have_text("completed")
            expect_step_state(page, "tell", "done")
        assert RunbookRun.objects.get().state == "completed"
    except Exception:
        print(worker.output()[-4000:])
        raise


@pytest.mark.browser
def test_a_protected_action_step_waits_for_a_second_persons_approval(
    live_server: Any,
    catalog: Any,
    actors: dict[str, Any],
    library: Any,
    worker_factory: Any,
    request: pytest.FixtureRequest,
) -> None:
    worker = worker_factory(beat=True)
    base = live_server.url
    try:
        with chromium(request) as (_, page):
            log_in(page, base, "rita")
            page.goto(f"{base}/runs/new/?runbook=004-rehydrate-mart")
            page.get_by_label(re.compile(r"materialized view to refresh")).select_option(PROD_MART)
            page.get_by_role("button", name="Start the run").click()
            page.wait_for_url(re.compile(r"/runs/\d+/$"))
            run_url = page.url
            refresh = step(page, "refresh")
            refresh.get_by_role("button", name="Request approval").click()
            expect(refresh.locator("[data-testid=action-state]")).to_have_text("awaiting_approval")
            expect(refresh).to_contain_text("Waiting for approval by a different approver")
            log_out(page)

            log_in(page, base, "alice")
            page.goto(run_url)
            step(page, "refresh").get_by_role("link", name="Open the action").click()
            page.wait_for_url(re.compile(r"/actions/[0-9a-f-]{36}/$"))
            page.get_by_label("Comment").fill("plan checked: concurrent refresh")
            page.get_by_role("button", name="Approve").click()
            page.goto(run_url)
            expect_step_state(page, "refresh", "done", timeout=60_000)
            expect(step(page, "refresh")).to_contain_text("verified")
        run = RunbookRun.objects.get()
        refresh_row = run.steps.get(step_id="refresh")
        assert refresh_row.action is not None and refresh_row.action.approvals.get().approver.username == "alice"
    except Exception:
        print(worker.output()[-4000:])
        raise

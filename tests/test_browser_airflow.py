"""A backfill from the target page's form in a real browser, with the day pickers the form offers, against
the real Airflow: the action stores aware UTC dates, shows its plan and is carried out by a real worker."""

from __future__ import annotations

import os

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop in this thread

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from controlplane.actions.models import ActionRun, ActionState
from tests.test_airflow import RETAIL, airflow_catalog, cancel_open_backfills, final, own_backfills  # noqa: F401
from tests.test_browser import CHROMIUM_ARGS, TIMEOUT_MS, log_in, playwright, screenshot_path


@pytest.mark.browser
@pytest.mark.worker
def test_backfill_from_the_form_with_day_pickers_runs_with_utc_dates(
    live_server: Any,
    airflow: Any,
    airflow_catalog: Any,  # noqa: F811
    actors: dict[str, Any],
    worker_factory: Any,
    request: pytest.FixtureRequest,
) -> None:
    cancel_open_backfills(airflow, RETAIL)
    worker_factory()
    base = live_server.url
    with playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            log_in(page, base, "rita")
            page.goto(f"{base}/targets/dev.airflow.{RETAIL}/")
            form = page.locator("#verb-backfill")
            start, end = form.locator("#verb-backfill-from_date"), form.locator("#verb-backfill-to_date")
            assert start.get_attribute("type") == "date" and end.get_attribute("type") == "date"
            start.fill("2025-04-01")
            end.fill("2025-04-02")
            form.locator("[name='param-reprocess_behavior']").select_option("completed")
            form.get_by_label("Reason").fill("April's first days were loaded from a bad extract")
            form.get_by_role("button", name="Preview").click()
            plan = page.locator("#verb-backfill-plan .plan")
            expect(plan).to_contain_text("2 run(s) from 2025-04-01T00:00:00+00:00 to 2025-04-02T00:00:00+00:00")

            form.get_by_role("button", name="Run").click()
            page.wait_for_url(re.compile(r"/actions/[0-9a-f-]{36}/$"))
            action = ActionRun.objects.get()
            assert action.params["from_date"] == "2025-04-01T00:00:00Z"
            assert action.params["to_date"] == "2025-04-02T00:00:00Z"
            expect(page.locator("body")).to_contain_text("backfill retail_transformation_pipeline: 2 run(s)")
            action = final(action, timeout=180)
            assert action.state == ActionState.SUCCEEDED, (action.error, action.verification)
            page.wait_for_selector("#action-status .state-succeeded", timeout=TIMEOUT_MS)
            assert len(own_backfills(airflow, RETAIL, action.id)) == 1
        finally:
            try:
                page.screenshot(path=str(screenshot_path(request.node.name)), full_page=True)
            finally:
                browser.close()
                cancel_open_backfills(airflow, RETAIL)

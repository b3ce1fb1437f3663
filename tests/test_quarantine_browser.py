"""The weekly quarantine review in a real browser (Playwright + Debian Chromium) against the real server,
a source of parquet files on local disk and the database: a responder opens the review with work to do
from the list, sees the heat map and the trends, loads a sample in place (htmx), and keeps a new reason's
records with a note and an expiry; the item shows the keep action with its preview.

The test saves a screenshot of its last page (``SCREENSHOT_DIR``, default var/screenshots; CI lists them).
"""

from __future__ import annotations

import os

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop in this thread

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from controlplane.actions.models import ActionRun
from controlplane.quarantine.models import Disposition
from tests.quarantine_qweb import FUTURE_DATE, OVER_DAY, make_review, quarantine_source, write_source
from tests.test_browser import CHROMIUM_ARGS, TIMEOUT_MS, log_in, playwright, screenshot_path


@pytest.mark.browser
def test_responder_reviews_a_week_loads_a_sample_and_keeps_a_new_reason(
    live_server: Any, actors: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    write_source(tmp_path)
    review = make_review(quarantine_source(tmp_path))
    item = review.items.get(reason=FUTURE_DATE)
    base = live_server.url
    with playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        try:
            log_in(page, base, "rita")
            page.get_by_role("link", name="Quarantine").click()
            page.wait_for_url(f"{base}/quarantine/")
            page.get_by_role("link", name=re.compile(r"2026-11-23 . 2026-11-29")).click()
            page.wait_for_url(f"{base}/quarantine/{review.pk}/")

            over = page.locator(f'.hm-cell[data-table="orders"][data-date="{OVER_DAY.isoformat()}"]')
            expect(over).to_have_attribute("data-level", "over")
            expect(page.locator('svg.trend[data-table="orders"]')).to_be_visible()

            card = page.locator(f"#item-{item.pk}")
            expect(card.get_by_test_id("disposition-status")).to_have_text("needs a decision")
            card.get_by_role("link", name="Show the first 50 records").click()
            sample = card.locator(".sample table")
            expect(sample).to_be_visible()  # swapped in place: still on the review page
            assert page.url == f"{base}/quarantine/{review.pk}/"
            expect(sample.locator("thead th").first).to_have_text("order_id")  # key columns first
            expect(sample.locator("tbody tr")).to_have_count(5)

            card.get_by_label("Keep until").fill("2027-01-31")
            card.get_by_label(re.compile(r"^Note")).fill("a partner sends these late; fixed upstream in January")
            card.get_by_role("button", name="Keep").click()
            card = page.locator(f"#item-{item.pk}")
            expect(card).to_contain_text("keep requested.")
            expect(card.get_by_test_id("disposition-status")).to_have_text("decision pending")
            link = card.get_by_test_id("disposition-action")
            expect(link).to_have_attribute("href", re.compile(r"^/actions/[0-9a-f-]{36}/$"))
            action_url = link.get_attribute("href")
            expect(card.locator(".plan")).to_be_visible()  # the action's preview
        finally:
            try:
                page.screenshot(path=str(screenshot_path(request.node.name)), full_page=True)
            finally:
                browser.close()
    action = ActionRun.objects.get()
    assert action_url == f"/actions/{action.id}/"
    assert (action.verb, action.params["expires"], action.params["reason"]) == (
        "quarantine-keep",
        "2027-01-31",
        FUTURE_DATE,
    )
    disposition = Disposition.objects.get()
    assert (disposition.kind, disposition.item_id, disposition.action_id) == ("keep", item.pk, action.id)

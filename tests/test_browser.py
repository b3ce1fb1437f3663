"""The whole path in a real browser: a responder previews and requests a prod mart refresh, an approver
approves it from the inbox, and the action page (already open in another tab) follows it live to a
verified success executed by a real Celery worker."""

from __future__ import annotations

import os

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop in this thread

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from playwright.sync_api import Page, Playwright, expect, sync_playwright

from controlplane.actions.models import ActionRun, ActionState

ROOT = Path(__file__).resolve().parent.parent
PROD_MART = "prod.weather.daily_weather_aggregates"
TIMEOUT_MS = 30_000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@contextmanager
def playwright() -> Iterator[Playwright]:
    """Playwright's sync API, closing on the way out the database connections the test opened meanwhile.
    While Playwright's event loop runs in this thread, Django keeps the ORM's connections per async context,
    out of reach of pytest-django's closing at the test's end: one left open held the test database at the
    session's end (DROP DATABASE waited 10 s, then failed with "being accessed by other users")."""
    with sync_playwright() as pw:
        try:
            yield pw
        finally:
            connections.close_all()


def screenshot_path(name: str) -> Path:
    folder = Path(os.environ.get("SCREENSHOT_DIR", str(ROOT / "var" / "screenshots")))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


def log_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"{username}-password")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/")


@pytest.mark.browser
def test_prod_refresh_is_previewed_requested_approved_and_followed_live_to_success(
    live_server: Any, catalog: Any, actors: dict[str, Any], worker_factory: Any, request: pytest.FixtureRequest
) -> None:
    # With beat, the reaper re-dispatches a queued action whose message vanished: the broker is a shared dev
    # Redis, where another session's worker or flush can swallow it (the product's own broker-loss path).
    worker = worker_factory(beat=True)
    base = live_server.url
    with playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        last = page
        try:
            # -- the responder previews and requests
            log_in(page, base, "rita")
            page.goto(f"{base}/targets/{PROD_MART}/")
            form = page.locator("#verb-refresh-mart")
            form.get_by_label("Reason").fill("daily aggregates stale after the late weather load (INC-42)")
            form.get_by_role("button", name="Preview").click()
            plan = page.locator("#verb-refresh-mart-plan .plan")
            plan.wait_for(timeout=TIMEOUT_MS)
            expect(plan).to_contain_text("mart.daily_weather_aggregates")
            expect(plan).to_contain_text("concurrently")
            expect(plan).to_contain_text("EXCLUSIVE lock")
            assert ActionRun.objects.count() == 0  # a preview writes nothing

            form.get_by_role("button", name="Request approval").click()
            page.wait_for_url(re.compile(r"/actions/[0-9a-f-]{36}/$"))
            action_url = page.url
            expect(page.locator("#action-status")).to_contain_text("awaiting approval")
            expect(page.locator("#action-controls")).to_contain_text("Waiting for another approver")
            page.get_by_role("button", name="Log out").click()
            page.wait_for_url(re.compile(r"/login/"))

            # -- the approver keeps the action page open in one tab and approves from the inbox in another
            log_in(page, base, "alice")
            watcher = context.new_page()
            watcher.goto(action_url)
            expect(watcher.locator("#action-status")).to_contain_text("awaiting approval")
            watcher.evaluate("window.__notReloaded = true")

            page.get_by_role("link", name=re.compile(r"^Approvals")).click()
            page.wait_for_url(f"{base}/approvals/")
            card = page.locator("article.approval").filter(has_text=PROD_MART)
            expect(card).to_contain_text("rita")
            card.get_by_label("Comment").fill("checked the plan: concurrent refresh, readers unaffected")
            card.get_by_role("button", name="Approve").click()
            expect(page.locator("article.approval").first).to_contain_text("Approved")

            # -- the open action page follows it live: log lines stream in, the badge reaches succeeded
            last = watcher
            watcher.wait_for_selector("#action-status .state-succeeded", timeout=TIMEOUT_MS)
            expect(watcher.locator("#action-live .log")).to_contain_text("refreshing mart.daily_weather_aggregates")
            expect(watcher.locator("#action-live .log")).to_contain_text("verification passed")
            expect(watcher.locator("#action-live .verification")).to_contain_text("Verification passed")
            expect(watcher.locator("#action-live .verification")).to_contain_text("is populated with")
            expect(watcher.locator("#action-approvals")).to_contain_text("alice")
            assert watcher.evaluate("window.__notReloaded") is True  # htmx swapped it in place
            assert watcher.locator("#action-live[hx-trigger]").count() == 0  # polling stopped
            assert ActionRun.objects.get().state == ActionState.SUCCEEDED
        except Exception:
            print(worker.output()[-4000:])  # the worker's side of the story, in the failure report
            raise
        finally:
            try:
                last.screenshot(path=str(screenshot_path(request.node.name)), full_page=True)
            finally:
                browser.close()

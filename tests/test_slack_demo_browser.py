"""The demo's Slack channel page in a real browser (Playwright + Debian Chromium): messages posted through
slack_sdk's WebClient to the Slack stand-in are shown as Slack renders them; the user picked in "You are"
sees their own ephemeral messages only; a danger button asks for confirmation first (Cancel sends nothing,
"Run it" sends), and the signed ``block_actions`` press reaches the app; the app's response_url answer
replaces the message on the open page without a reload; a slash command typed in the message box reaches
the app signed and its answer is shown to its user.

The app here is the receiving server of tests/test_slack_standin.py, which verifies the signature with
slack_sdk's SignatureVerifier as the control plane's ``/slack/interactions`` and ``/slack/commands`` do.
"""

from __future__ import annotations

import os

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop in this thread

import json
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import expect
from slack_sdk import WebClient

from controlplane.slack.models import SlackUserLink
from sandbox import slack as standin
from tests.test_browser_runbooks import chromium
from tests.test_slack_standin import (  # noqa: F401 (fixtures)
    INCIDENT_BLOCKS,
    TOKEN,
    Receiver,
    app_slack,
    receiver,
)


def answer(url: str, body: dict[str, Any]) -> None:
    """What the app does after a press: answer through the response_url."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()


@pytest.mark.browser
def test_the_channel_page_confirms_a_danger_button_and_sends_the_signed_press(
    app_slack: standin.SlackStandIn,  # noqa: F811 (the fixtures imported above)
    receiver: Receiver,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    client = WebClient(token=TOKEN, base_url=app_slack.api_url, timeout=5)
    parent = client.chat_postMessage(channel="#data-incidents", text="INC-12", blocks=INCIDENT_BLOCKS)
    client.chat_postMessage(channel="#data-incidents", text="clear requested by *bob*", thread_ts=parent["ts"])
    client.chat_postEphemeral(channel="#data-incidents", user="U0BOB", text="Link your Slack user first")

    with chromium(request) as (_, page):
        page.goto(app_slack.channel_url("#data-incidents"))
        expect(page.locator("header h2")).to_have_text("#data-incidents")
        expect(page.locator(".block.header")).to_have_text("INC-12 ingest_orders failed")
        expect(page.locator(".thread")).to_contain_text("clear requested by bob")

        page.get_by_label("You are").select_option("U0BOB")
        page.wait_for_url("**as=U0BOB")
        expect(page.get_by_text("Link your Slack user first")).to_be_visible()
        expect(page.get_by_text("Only visible to you")).to_be_visible()
        page.get_by_label("You are").select_option("U0RITA")
        page.wait_for_url("**as=U0RITA")
        expect(page.get_by_text("Link your Slack user first")).to_have_count(0)

        danger = page.get_by_role("button", name="Clear failed tasks")
        expect(danger).to_have_class("btn danger")
        danger.click()
        dialog = page.locator("dialog[open]")
        expect(dialog).to_contain_text("Clear 3 task instances?")
        expect(dialog).to_contain_text("Clears ingest_orders and 2 downstream")
        dialog.get_by_role("button", name="Cancel").click()
        expect(page.locator("dialog[open]")).to_have_count(0)
        assert receiver.requests == []  # denied: nothing sent

        danger.click()
        page.locator("dialog[open]").get_by_role("button", name="Run it").click()
        expect(page.get_by_test_id("press-status").first).to_contain_text(
            "Clear failed tasks (action.launch): answered 200"
        )
        [sent] = receiver.requests
        assert sent["path"] == "/slack/interactions" and sent["signed"] is True
        payload = json.loads(sent["form"]["payload"])
        assert (payload["type"], payload["user"]["id"], payload["actions"][0]["action_id"]) == (
            "block_actions",
            "U0RITA",
            "action.launch",
        )
        assert payload["container"]["message_ts"] == parent["ts"]

        # The app replaces the message through the response_url: the open page shows it without a reload.
        answer(
            payload["response_url"],
            {
                "replace_original": True,
                "text": "clear requested",
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Clear requested by *rita*"}}],
            },
        )
        expect(page.get_by_text("Clear requested by rita")).to_be_visible(timeout=10_000)
        expect(page.get_by_role("button", name="Clear failed tasks")).to_have_count(0)
        expect(page.locator(".msg").first.locator(".edited")).to_have_text("(edited)")

        receiver.answer.update(body=json.dumps({"text": "INC-12 open, clear running"}), type="application/json")
        page.get_by_label("Message").fill("/runbook status")
        page.get_by_label("Message").press("Enter")
        expect(page.get_by_text("INC-12 open, clear running")).to_be_visible()
        command = receiver.requests[-1]
        assert command["path"] == "/slack/commands" and command["signed"] is True
        assert (command["form"]["command"], command["form"]["text"], command["form"]["user_id"]) == (
            "/runbook",
            "status",
            "U0RITA",
        )


@pytest.mark.browser
def test_a_press_on_the_channel_page_is_accepted_by_the_control_planes_signature_check(
    live_server: Any,
    actors: dict[str, Any],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """The same loop against the control plane's own ``/slack/interactions``: a press
    signed with the app's signing secret is answered 200, one signed with another secret is refused."""
    monkeypatch.setenv("CP_TEST_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("CP_TEST_SLACK_SECRET", "demo-signing-secret")
    slack = standin.start(
        token=TOKEN,
        signing_secret="demo-signing-secret",
        interactions_url=f"{live_server.url}/slack/interactions",
        commands_url=f"{live_server.url}/slack/commands",
        users=[{"id": "U0RITA", "name": "rita", "email": "rita@example.com"}],
    )
    try:
        settings.SLACK = {
            **settings.SLACK,
            "BOT_TOKEN_REF": "env:CP_TEST_SLACK_TOKEN",
            "SIGNING_SECRET_REF": "env:CP_TEST_SLACK_SECRET",
            "API_URL": slack.api_url,
            "PUBLIC_URL": live_server.url,
        }
        SlackUserLink.objects.create(slack_user_id="U0RITA", user=actors["responder"], via=SlackUserLink.Via.ADMIN)
        client = WebClient(token=TOKEN, base_url=slack.api_url, timeout=5)
        posted = client.chat_postMessage(channel="#data-incidents", text="INC", blocks=INCIDENT_BLOCKS)
        with chromium(request) as (_, page):
            page.goto(f"{slack.channel_url('#data-incidents')}?as=U0RITA")
            page.get_by_role("button", name="Acknowledge").click()
            expect(page.get_by_test_id("press-status").first).to_contain_text(
                "Acknowledge (incident.ack): answered 200"
            )
        slack.state.signing_secret = "not-the-apps-secret"
        press = {"user": "U0RITA", "channel": "#data-incidents", "ts": posted["ts"], "action_id": "incident.ack"}
        req = urllib.request.Request(
            f"{slack.base_url}/_standin/press",
            data=json.dumps(press).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as answered:
            refused = json.loads(answered.read())["press"]
        assert refused["status"] in (401, 403), refused
    finally:
        slack.stop()

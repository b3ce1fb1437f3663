"""The Slack stand-in answers slack_sdk's WebClient as Slack does: what the demo and the Slack tests rely on."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from sandbox import slack as standin

TOKEN = "xoxb-test-token"


@pytest.fixture
def slack() -> Iterator[standin.SlackStandIn]:
    server = standin.start(token=TOKEN)
    yield server
    server.stop()


def control(server: standin.SlackStandIn, what: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{server.base_url}/_standin/{what}",
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


def test_messages_threads_and_updates_are_recorded(slack: standin.SlackStandIn) -> None:
    client = WebClient(token=TOKEN, base_url=slack.api_url, timeout=5)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*load failed*"}}]
    parent = client.chat_postMessage(channel="#data-incidents", text="load failed", blocks=blocks)
    reply = client.chat_postMessage(channel="#data-incidents", text="clear requested", thread_ts=parent["ts"])
    client.chat_update(channel="#data-incidents", ts=parent["ts"], text="resolved", blocks=[])
    messages = control(slack, "messages")["messages"]
    assert [(m["text"], m["thread_ts"], m["edits"]) for m in messages] == [
        ("resolved", "", 1),
        ("clear requested", parent["ts"], 0),
    ]
    assert reply["ts"] > parent["ts"]
    with pytest.raises(SlackApiError) as missing:
        client.chat_update(channel="#data-incidents", ts="1.000000", text="x")
    assert missing.value.response["error"] == "message_not_found"


def test_a_wrong_token_is_refused_as_slack_refuses_it(slack: standin.SlackStandIn) -> None:
    with pytest.raises(SlackApiError) as refused:
        WebClient(token="xoxb-wrong", base_url=slack.api_url, timeout=5).chat_postMessage(channel="#x", text="hi")
    assert refused.value.response.status_code == 200 and refused.value.response["error"] == "invalid_auth"
    assert control(slack, "messages")["messages"] == []


def test_faults_answer_429_with_retry_after_then_ok(slack: standin.SlackStandIn) -> None:
    control(slack, "faults", {"method": "chat.postMessage", "status": 429, "retry_after": 3, "times": 2})
    client = WebClient(token=TOKEN, base_url=slack.api_url, timeout=5)
    for _ in range(2):
        with pytest.raises(SlackApiError) as limited:
            client.chat_postMessage(channel="#x", text="hi")
        assert limited.value.response.status_code == 429
        assert limited.value.response.headers["Retry-After"] == "3"
    assert client.chat_postMessage(channel="#x", text="hi")["ok"] is True
    control(slack, "faults", {"method": "users.info", "error": "fatal_error"})
    with pytest.raises(SlackApiError) as failed:
        client.users_info(user="U1")
    assert failed.value.response["error"] == "fatal_error"


def test_users_info_dms_and_response_urls(slack: standin.SlackStandIn) -> None:
    control(slack, "users", {"users": [{"id": "U0RITA", "name": "rita", "email": "rita@example.com"}]})
    client = WebClient(token=TOKEN, base_url=slack.api_url, timeout=5)
    assert client.users_info(user="U0RITA")["user"]["profile"]["email"] == "rita@example.com"
    with pytest.raises(SlackApiError):
        client.users_info(user="U0NOBODY")
    dm = client.conversations_open(users="U0RITA")["channel"]["id"]
    client.chat_postMessage(channel=dm, text="approve?")
    request = urllib.request.Request(
        slack.respond_url("abc"),
        data=json.dumps({"text": "done", "replace_original": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).close()
    messages = control(slack, "messages")["messages"]
    assert [(m["type"], m["channel"], m["text"]) for m in messages] == [
        ("message", "DU0RITA", "approve?"),
        ("response", "", "done"),
    ]
    assert messages[1]["response_url"] == "abc" and messages[1]["replace_original"] is True

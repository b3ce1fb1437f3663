"""The Slack stand-in answers slack_sdk's WebClient as Slack does, and sends the app presses and slash commands
signed and shaped as Slack sends them: what the demo and the Slack tests rely on."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from sandbox import slack as standin
from sandbox.processes import free_port
from tests.slack_signed import standin_control as control

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "xoxb-test-token"


@pytest.fixture
def slack() -> Iterator[standin.SlackStandIn]:
    server = standin.start(token=TOKEN)
    yield server
    server.stop()


def test_messages_threads_and_updates_are_recorded(slack: standin.SlackStandIn) -> None:
    client = WebClient(token=TOKEN, base_url=slack.api_url, timeout=5)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*load failed*"}}]
    parent = client.chat_postMessage(channel="#data-incidents", text="load failed", blocks=blocks)
    # As at Slack, a channel named in a post answers with its id, and the message lives under the id.
    assert parent["channel"] == standin.channel_id("data-incidents") and parent["channel"].startswith("C")
    reply = client.chat_postMessage(channel=parent["channel"], text="clear requested", thread_ts=parent["ts"])
    client.chat_update(channel=parent["channel"], ts=parent["ts"], text="resolved", blocks=[])
    messages = control(slack, "messages")["messages"]
    assert [(m["channel"], m["text"], m["thread_ts"], m["edits"]) for m in messages] == [
        (parent["channel"], "resolved", "", 1),
        (parent["channel"], "clear requested", parent["ts"], 0),
    ]
    assert reply["ts"] > parent["ts"]
    with pytest.raises(SlackApiError) as missing:
        client.chat_update(channel=parent["channel"], ts="1.000000", text="x")
    assert missing.value.response["error"] == "message_not_found"
    # chat.update takes no channel name (https://github.com/slackapi/python-slack-sdk/issues/696).
    with pytest.raises(SlackApiError) as by_name:
        client.chat_update(channel="#data-incidents", ts=parent["ts"], text="x")
    assert by_name.value.response["error"] == "channel_not_found"
    # A user id posts to the user's direct messages with the app.
    assert client.chat_postMessage(channel="U0RITA", text="approve?")["channel"] == "DU0RITA"


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


# ------------------------------------------------------------- Slack -> app: presses and commands

SECRET = "8f14e45fceea167a5a36dedd4bea2543"
RITA = {"id": "U0RITA", "name": "rita", "email": "rita@example.com"}
BOB = {"id": "U0BOB", "name": "bob", "email": "bob@example.com"}


@dataclass
class Receiver:
    """The app's side in these tests: records each request, whether its Slack signature verifies (slack_sdk's
    SignatureVerifier, as the control plane checks it), and answers with ``answer``."""

    base_url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    answer: dict[str, Any] = field(default_factory=lambda: {"status": 200, "body": "", "type": "text/plain"})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received: list[dict[str, Any]] = []
    answer: dict[str, Any] = {"status": 200, "body": "", "type": "text/plain", "delay": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = dict(self.headers.items())
            received.append(
                {
                    "path": self.path,
                    "headers": headers,
                    "body": body.decode(),
                    "signed": SignatureVerifier(SECRET).is_valid_request(body, headers),
                    "signed_with_other_secret": SignatureVerifier("not-the-secret").is_valid_request(body, headers),
                    "form": dict(urllib.parse.parse_qsl(body.decode())),
                }
            )
            time.sleep(answer["delay"])
            data = answer["body"].encode()
            self.send_response(answer["status"])
            self.send_header("Content-Type", answer["type"])
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver(f"http://127.0.0.1:{server.server_address[1]}", received, answer)
    server.shutdown()
    server.server_close()


@pytest.fixture
def app_slack(receiver: Receiver) -> Iterator[standin.SlackStandIn]:
    server = standin.start(
        token=TOKEN,
        signing_secret=SECRET,
        interactions_url=f"{receiver.base_url}/slack/interactions",
        commands_url=f"{receiver.base_url}/slack/commands",
        users=[RITA, BOB],
    )
    yield server
    server.stop()


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def page(server: standin.SlackStandIn, channel: str, as_user: str) -> str:
    with urllib.request.urlopen(f"{server.channel_url(channel)}?as={as_user}", timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/html")
        return answer.read().decode()


INCIDENT_BLOCKS: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": "INC-12 ingest_orders failed"}},
    {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": "*data_ingestion_bronze* failed in `dev`: <http://cp.example/incidents/12/|open INC-12> "
            "for <@U0RITA>\n```airflow tasks clear data_ingestion_bronze```",
        },
        "fields": [{"type": "mrkdwn", "text": "*Severity*\nhigh"}, {"type": "plain_text", "text": "Env: dev"}],
    },
    {"type": "divider"},
    {"type": "context", "elements": [{"type": "mrkdwn", "text": "Runbook _000 ingestion_ &lt;script&gt;"}]},
    {
        "type": "actions",
        "block_id": "incident-12",
        "elements": [
            {
                "type": "button",
                "action_id": "incident.ack",
                "text": {"type": "plain_text", "text": "Acknowledge"},
                "style": "primary",
                "value": '{"incident": 12}',
            },
            {
                "type": "button",
                "action_id": "action.launch",
                "text": {"type": "plain_text", "text": "Clear failed tasks"},
                "style": "danger",
                "value": '{"incident": 12, "verb": "clear", "target": "dev.airflow.data_ingestion_bronze"}',
                "confirm": {
                    "title": {"type": "plain_text", "text": "Clear 3 task instances?"},
                    "text": {"type": "mrkdwn", "text": "Clears *ingest_orders* and 2 downstream"},
                    "confirm": {"type": "plain_text", "text": "Run it"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            },
        ],
    },
    {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": "runbook.start",
                "text": {"type": "plain_text", "text": "Start runbook"},
                "value": "{}",
            }
        ],
    },
]


def test_a_press_posts_a_block_actions_interaction_signed_and_shaped_as_slack_sends_it(
    app_slack: standin.SlackStandIn, receiver: Receiver
) -> None:
    client = WebClient(token=TOKEN, base_url=app_slack.api_url, timeout=5)
    posted = client.chat_postMessage(channel="#data-incidents", text="INC-12", blocks=INCIDENT_BLOCKS)
    status, answer = post_json(
        f"{app_slack.base_url}/_standin/press",
        {"user": "U0RITA", "channel": "#data-incidents", "ts": posted["ts"], "action_id": "action.launch"},
    )
    assert status == 200 and answer["press"]["status"] == 200 and answer["press"]["error"] == ""

    [sent] = receiver.requests
    assert sent["path"] == "/slack/interactions"
    assert sent["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert sent["signed"] is True and sent["signed_with_other_secret"] is False
    assert list(sent["form"]) == ["payload"]
    payload = json.loads(sent["form"]["payload"])
    assert payload["type"] == "block_actions"
    assert payload["user"] == {"id": "U0RITA", "username": "rita", "name": "rita", "team_id": standin.TEAM_ID}
    assert payload["team"]["id"] == standin.TEAM_ID
    assert payload["channel"] == {"id": posted["channel"], "name": "data-incidents"}
    assert payload["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": posted["channel"],
        "is_ephemeral": False,
    }
    assert payload["message"]["ts"] == posted["ts"] and payload["message"]["text"] == "INC-12"
    # The message as posted, with the block_ids Slack gives blocks that had none.
    assert [b.get("type") for b in payload["message"]["blocks"]] == [b["type"] for b in INCIDENT_BLOCKS]
    assert all(b["block_id"] for b in payload["message"]["blocks"])
    assert payload["message"]["blocks"][4] == INCIDENT_BLOCKS[4]
    assert payload["trigger_id"] and payload["response_url"].startswith(f"{app_slack.base_url}/_standin/respond/")
    [action] = payload["actions"]
    assert action["action_id"] == "action.launch" and action["block_id"] == "incident-12"
    assert json.loads(action["value"]) == {
        "incident": 12,
        "verb": "clear",
        "target": "dev.airflow.data_ingestion_bronze",
    }
    assert action["type"] == "button" and float(action["action_ts"]) > 0

    # A block without block_id: its generated one is in the payload's message too.
    post_json(
        f"{app_slack.base_url}/_standin/press",
        {"user": "U0BOB", "channel": "#data-incidents", "ts": posted["ts"], "action_id": "runbook.start"},
    )
    second = json.loads(receiver.requests[1]["form"]["payload"])
    assert second["actions"][0]["block_id"] == second["message"]["blocks"][5]["block_id"]
    assert second["user"]["id"] == "U0BOB" and second["response_url"] != payload["response_url"]


def test_a_press_that_names_nothing_pressable_sends_nothing(
    app_slack: standin.SlackStandIn, receiver: Receiver
) -> None:
    client = WebClient(token=TOKEN, base_url=app_slack.api_url, timeout=5)
    posted = client.chat_postMessage(channel="#data-incidents", text="INC-12", blocks=INCIDENT_BLOCKS)
    press = {"user": "U0RITA", "channel": "#data-incidents", "ts": posted["ts"], "action_id": "action.launch"}
    assert post_json(f"{app_slack.base_url}/_standin/press", {**press, "action_id": "nope"}) == (
        400,
        {"ok": False, "error": "action_not_found"},
    )
    assert (
        post_json(f"{app_slack.base_url}/_standin/press", {**press, "user": "U0NOBODY"})[1]["error"] == "user_not_found"
    )
    assert (
        post_json(f"{app_slack.base_url}/_standin/press", {**press, "ts": "1.000000"})[1]["error"]
        == "message_not_found"
    )
    assert receiver.requests == []


def test_a_slash_command_posts_signed_form_fields_and_shows_the_answer_to_its_user(
    app_slack: standin.SlackStandIn, receiver: Receiver
) -> None:
    receiver.answer.update(body=json.dumps({"text": "2 open incidents"}), type="application/json")
    status, answer = post_json(
        f"{app_slack.base_url}/_standin/command",
        {"user": "U0RITA", "channel": "#data-incidents", "text": "/runbook status  dev"},
    )
    assert status == 200 and answer["press"]["status"] == 200
    [sent] = receiver.requests
    assert sent["path"] == "/slack/commands" and sent["signed"] is True and sent["signed_with_other_secret"] is False
    form = sent["form"]
    assert form["channel_name"] == "data-incidents"
    assert {k: form[k] for k in ("token", "team_id", "channel_id", "user_id", "user_name", "command", "text")} == {
        "token": standin.VERIFICATION_TOKEN,
        "team_id": standin.TEAM_ID,
        "channel_id": standin.channel_id("data-incidents"),
        "user_id": "U0RITA",
        "user_name": "rita",
        "command": "/runbook",
        "text": "status  dev",
    }
    assert form["response_url"].startswith(f"{app_slack.base_url}/_standin/respond/") and form["trigger_id"]
    # The HTTP answer is shown to the user who typed it, and to nobody else.
    assert "2 open incidents" in page(app_slack, "#data-incidents", "U0RITA")
    assert "2 open incidents" not in page(app_slack, "#data-incidents", "U0BOB")
    # Later answers through the response_url: in_channel for everyone, then one replacing it.
    post_json(form["response_url"], {"response_type": "in_channel", "text": "Preview: clear 3 tasks"})
    assert "Preview: clear 3 tasks" in page(app_slack, "#data-incidents", "U0BOB")
    post_json(form["response_url"], {"replace_original": True, "response_type": "in_channel", "text": "Cancelled"})
    shown = page(app_slack, "#data-incidents", "U0BOB")
    assert "Cancelled" in shown and "Preview: clear 3 tasks" not in shown

    # Not a command, and an app that fails: refused, or answered with Slackbot's note as Slack does.
    assert post_json(
        f"{app_slack.base_url}/_standin/command", {"user": "U0RITA", "channel": "#x", "text": "hello"}
    ) == (400, {"ok": False, "error": "not_a_command"})
    receiver.answer.update(status=500, body="boom", type="text/plain")
    post_json(f"{app_slack.base_url}/_standin/command", {"user": "U0RITA", "channel": "#x", "text": "/runbook help"})
    assert '/runbook failed with the error "dispatch_failed"' in html.unescape(page(app_slack, "#x", "U0RITA"))


def test_an_app_slower_than_slack_waits_is_shown_as_a_timeout(
    app_slack: standin.SlackStandIn, receiver: Receiver
) -> None:
    receiver.answer["delay"] = standin.DELIVERY_TIMEOUT_SECONDS + 1
    started = time.monotonic()
    _, answer = post_json(
        f"{app_slack.base_url}/_standin/command", {"user": "U0RITA", "channel": "#x", "text": "/runbook help"}
    )
    assert time.monotonic() - started < standin.DELIVERY_TIMEOUT_SECONDS + 0.9
    assert answer["press"]["status"] == 0 and "no answer within 3 s" in answer["press"]["error"]
    assert '/runbook failed with the error "operation_timeout"' in html.unescape(page(app_slack, "#x", "U0RITA"))


def test_response_url_answers_replace_add_and_delete_as_slack_applies_them(
    app_slack: standin.SlackStandIn, receiver: Receiver
) -> None:
    client = WebClient(token=TOKEN, base_url=app_slack.api_url, timeout=5)
    posted = client.chat_postMessage(channel="#approvals", text="approve clear?", blocks=INCIDENT_BLOCKS[4:5])
    press = {"user": "U0RITA", "channel": "#approvals", "ts": posted["ts"], "action_id": "incident.ack"}
    post_json(f"{app_slack.base_url}/_standin/press", press)
    response_url = json.loads(receiver.requests[0]["form"]["payload"])["response_url"]

    # Without replace_original: a new message, ephemeral to the presser unless in_channel.
    post_json(response_url, {"text": "Working on it"})
    post_json(response_url, {"text": "Acknowledged by rita", "response_type": "in_channel"})
    assert "Working on it" in page(app_slack, "#approvals", "U0RITA")
    as_bob = page(app_slack, "#approvals", "U0BOB")
    assert "Working on it" not in as_bob and "Acknowledged by rita" in as_bob
    # replace_original: the pressed message itself changes (edited), its buttons gone.
    post_json(response_url, {"replace_original": True, "text": "Approved by rita", "blocks": []})
    original = next(m for m in control(app_slack, "messages")["messages"] if m["ts"] == posted["ts"])
    assert (original["type"], original["text"], original["blocks"], original["edits"]) == (
        "message",
        "Approved by rita",
        [],
        1,
    )
    as_bob = page(app_slack, "#approvals", "U0BOB")
    assert "Approved by rita" in as_bob and "(edited)" in as_bob and "Acknowledge</button>" not in as_bob
    # A press on an ephemeral answer: no message in the payload; delete_original removes that answer.
    client.chat_postEphemeral(channel="#approvals", user="U0RITA", text="confirm?", blocks=INCIDENT_BLOCKS[4:5])
    ephemeral = [m for m in control(app_slack, "messages")["messages"] if m["type"] == "ephemeral"][-1]
    assert (
        post_json(f"{app_slack.base_url}/_standin/press", {**press, "ts": ephemeral["ts"], "user": "U0BOB"})[1]["error"]
        == "message_not_found"
    )  # someone else's ephemeral cannot be pressed
    post_json(f"{app_slack.base_url}/_standin/press", {**press, "ts": ephemeral["ts"]})
    payload = json.loads(receiver.requests[-1]["form"]["payload"])
    assert payload["container"]["is_ephemeral"] is True and "message" not in payload
    post_json(payload["response_url"], {"delete_original": True})
    assert "confirm?" not in page(app_slack, "#approvals", "U0RITA")

    # Five answers per response_url, as Slack takes: the first press's URL has had three, the sixth is refused.
    assert post_json(response_url, {"text": "fourth"}) == (200, {"ok": True})
    assert post_json(response_url, {"text": "fifth"}) == (200, {"ok": True})
    assert post_json(response_url, {"text": "sixth"}) == (404, {"ok": False, "error": "used_url"})
    shown = page(app_slack, "#approvals", "U0RITA")
    assert "fifth" in shown and "sixth" not in shown


def test_the_channel_page_renders_blocks_threads_and_ephemerals_for_their_user_only(
    app_slack: standin.SlackStandIn,
) -> None:
    client = WebClient(token=TOKEN, base_url=app_slack.api_url, timeout=5)
    parent = client.chat_postMessage(channel="#data-incidents", text="INC-12", blocks=INCIDENT_BLOCKS)
    client.chat_postMessage(channel="#data-incidents", text="clear requested by *rita*", thread_ts=parent["ts"])
    client.chat_postEphemeral(channel="#data-incidents", user="U0BOB", text="you are not linked")
    client.chat_postMessage(channel="DU0RITA", text="approve the prod refresh?")
    client.chat_update(channel=parent["channel"], ts=parent["ts"], text="INC-12", blocks=INCIDENT_BLOCKS)

    shown = page(app_slack, "#data-incidents", "U0RITA")
    assert "INC-12 ingest_orders failed" in shown  # header
    assert "<b>data_ingestion_bronze</b>" in shown and "<code>dev</code>" in shown
    assert "<pre>airflow tasks clear data_ingestion_bronze</pre>" in shown
    assert '<a href="http://cp.example/incidents/12/" target="_blank" rel="noopener">open INC-12</a>' in shown
    assert "<b>@rita</b>" in shown and "<b>Severity</b><br>high" in shown and "<hr>" in shown
    assert "<i>000 ingestion</i> &lt;script&gt;" in shown and "<script>\n" not in shown.split("<script>", 1)[0]
    assert 'class="btn primary" type="submit" data-action-id="incident.ack"' in shown
    assert 'class="btn danger" type="button" data-action-id="action.launch"' in shown
    assert "<dialog>" in shown and "Clear 3 task instances?" in shown and "Run it" in shown
    assert '<span class="edited">(edited)</span>' in shown
    thread = shown.split('class="thread"', 1)[1]
    assert "1 reply" in thread and "clear requested by <b>rita</b>" in thread
    assert "you are not linked" not in shown and "Only visible to you" not in shown
    assert "@rita" in shown.split('id="channels"', 1)[1].split("</nav>")[0]  # rita's DM with the app

    as_bob = page(app_slack, "#data-incidents", "U0BOB")
    assert "you are not linked" in as_bob and "Only visible to you" in as_bob
    assert "DU0RITA" not in as_bob  # not bob's DM
    assert 'name="user" value="U0BOB"' in as_bob  # his presses are his


def test_the_command_line_stand_in_takes_its_secrets_from_the_environment_and_its_users_from_a_file(
    tmp_path: Path,
) -> None:
    users_file = tmp_path / "users.json"
    users_file.write_text(json.dumps({"users": [RITA]}))
    port = free_port()
    env = {**os.environ, "SLACK_STANDIN_TOKEN": TOKEN, "SLACK_STANDIN_SIGNING_SECRET": SECRET}
    argv = [sys.executable, "-m", "sandbox.slack", "--port", str(port), "--users-file", str(users_file)]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        assert f"http://127.0.0.1:{port}/api/" in process.stdout.readline()
        client = WebClient(token=TOKEN, base_url=f"http://127.0.0.1:{port}/api/", timeout=5)
        assert client.users_info(user="U0RITA")["user"]["profile"]["email"] == "rita@example.com"
        assert TOKEN not in " ".join(argv) and SECRET not in " ".join(argv)  # nothing secret in the process list
    finally:
        process.terminate()
        process.wait(timeout=10)

    users_file.write_text(json.dumps({"users": [{"id": "rita", "name": "rita"}]}))
    refused = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert refused.returncode == 2 and "users[0]: needs an id like U0RITA and a name" in refused.stderr


def test_bad_demo_users_are_refused_and_change_nothing(slack: standin.SlackStandIn) -> None:
    control(slack, "users", {"users": [RITA]})
    status, answer = post_json(f"{slack.base_url}/_standin/users", {"users": [BOB, {"id": "U0X"}]})
    assert status == 400 and answer["error"] == "invalid_users" and "users[1]" in answer["detail"]
    assert list(slack.state.users) == ["U0RITA"]
    # Presses need a configured app: this stand-in has no request URLs.
    status, answer = post_json(f"{slack.base_url}/_standin/press", {"user": "U0RITA", "channel": "#x", "ts": "1.1"})
    assert (status, answer["error"]) == (400, "no_interactions_url")

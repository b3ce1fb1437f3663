"""Slack's side of the inbound tests: the stand-in for Slack's Web API with the control plane pointed at
it, and requests signed and encoded exactly as Slack sends them (v0 HMAC-SHA256 over
``v0:{timestamp}:{body}``; interactions as a form field ``payload`` holding JSON, commands as form fields)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import os
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.test import Client

from controlplane.slack.models import SlackUserLink
from sandbox import slack as standin
from tests.conftest import wait_for

TOKEN = "xoxb-inbound-test"
SIGNING_SECRET = "signing-" + uuid.uuid4().hex
TEAM = standin.TEAM_ID
CHANNEL = "C0INCIDENTS"
os.environ["CP_TEST_SLACK_TOKEN"] = TOKEN
os.environ["CP_TEST_SLACK_SIGNING_SECRET"] = SIGNING_SECRET
_counter = itertools.count(1)


def standin_control(server: standin.SlackStandIn, what: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A call to the stand-in's own endpoints (``/_standin/<what>``): GET without a body, else POST."""
    request = urllib.request.Request(
        f"{server.base_url}/_standin/{what}",
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return dict(json.loads(answer.read()))


def link(user: Any, slack_id: str) -> None:
    """Link a Slack user to ``user`` as an admin would (no audit: test set-up)."""
    SlackUserLink.objects.create(user=user, slack_user_id=slack_id, via=SlackUserLink.Via.ADMIN)


def sign(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


@dataclass
class SlackWorld:
    """The stand-in, the settings pointing at it, and Slack's requests to the control plane."""

    server: standin.SlackStandIn
    client: Client = field(default_factory=Client)

    @property
    def worker_env(self) -> dict[str, str]:
        return {
            "SLACK_BOT_TOKEN_REF": "env:CP_TEST_SLACK_TOKEN",
            "SLACK_SIGNING_SECRET_REF": "env:CP_TEST_SLACK_SIGNING_SECRET",
            "SLACK_API_URL": self.server.api_url,
            "PUBLIC_URL": "http://cp.test",
        }

    def control(self, what: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return standin_control(self.server, what, body)

    def slack_users(self, *users: dict[str, str]) -> None:
        self.control("users", {"users": list(users)})

    def answers(self, response_url_name: str) -> list[dict[str, Any]]:
        """What the control plane answered through one response_url, in order."""
        messages = self.control("messages")["messages"]
        return [m for m in messages if m["type"] == "response" and m["response_url"] == response_url_name]

    def wait_answer(self, name: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        return list(wait_for(lambda: (a := self.answers(name)) and len(a) >= count and a, timeout=timeout, what=name))

    def post(self, path: str, body: str, headers: dict[str, str]) -> Any:
        return self.client.post(path, data=body, content_type="application/x-www-form-urlencoded", headers=headers)

    def press(
        self,
        action_id: str,
        value: dict[str, Any],
        *,
        user: str,
        message_ts: str = "1765000000.000100",
        answer_to: str = "",
        trigger_id: str = "",
        headers: dict[str, str] | None = None,
        secret: str = SIGNING_SECRET,
        timestamp: int | None = None,
    ) -> tuple[Any, str]:
        """A ``block_actions`` payload as Slack posts it for a button press; returns the response and the
        name of its response_url."""
        n = next(_counter)
        answer_to = answer_to or f"press-{uuid.uuid4().hex[:8]}"
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
            "api_app_id": "A0CONTROL",
            "token": "legacy-verification-token",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": CHANNEL, "is_ephemeral": False},
            "trigger_id": trigger_id or f"{n}.{int(time.time())}.{uuid.uuid4().hex}",
            "team": {"id": TEAM, "domain": "demo"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": CHANNEL, "name": "data-incidents"},
            "message": {"type": "message", "ts": message_ts, "text": "incident", "blocks": []},
            "state": {"values": {}},
            "response_url": self.server.respond_url(answer_to),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "actions",
                    "text": {"type": "plain_text", "text": action_id},
                    "value": json.dumps(value, separators=(",", ":")),
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        signed = sign(body, secret=secret, timestamp=timestamp)
        return self.post("/slack/interactions", body, {**signed, **(headers or {})}), answer_to

    def command(
        self, text: str, *, user: str, answer_to: str = "", secret: str = SIGNING_SECRET, timestamp: int | None = None
    ) -> tuple[Any, str]:
        """``/runbook <text>`` as Slack posts it; returns the response and the name of its response_url."""
        answer_to = answer_to or f"cmd-{uuid.uuid4().hex[:8]}"
        form = {
            "token": "legacy-verification-token",
            "team_id": TEAM,
            "team_domain": "demo",
            "channel_id": CHANNEL,
            "channel_name": "data-incidents",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/runbook",
            "text": text,
            "api_app_id": "A0CONTROL",
            "is_enterprise_install": "false",
            "response_url": self.server.respond_url(answer_to),
            "trigger_id": f"{next(_counter)}.{int(time.time())}.{uuid.uuid4().hex}",
        }
        body = urllib.parse.urlencode(form)
        return self.post("/slack/commands", body, sign(body, secret=secret, timestamp=timestamp)), answer_to


@contextlib.contextmanager
def running_slack(settings: Any) -> Iterator[SlackWorld]:
    """The stand-in, and the control plane's settings pointed at it (the ``slack`` fixture of the tests)."""
    server = standin.start(token=TOKEN)
    settings.SLACK = {
        **settings.SLACK,
        "BOT_TOKEN_REF": "env:CP_TEST_SLACK_TOKEN",
        "SIGNING_SECRET_REF": "env:CP_TEST_SLACK_SIGNING_SECRET",
        "API_URL": server.api_url,
        "PUBLIC_URL": "http://cp.test",
    }
    try:
        yield SlackWorld(server)
    finally:
        server.stop()

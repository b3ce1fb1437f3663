"""A local stand-in for Slack, for the demo and the tests (the real one needs a workspace).

Slack's side of both directions:
- the Web API the control plane calls, answered the way Slack does (bearer token, form, query or JSON bodies,
  HTTP 200 with ``{"ok": false, "error": ...}`` for errors; a channel named in a post answers with its id,
  ``C...``, which is what ``chat.update`` takes); every message is recorded, and a method can be
  told to fail a number of times: with an ``ok: false`` error, or with HTTP 429 and ``Retry-After`` as Slack's
  rate limiter answers. slack_sdk's ``WebClient`` talks to it over HTTP with ``base_url`` pointed here;
- what Slack sends the app: a button press becomes a ``block_actions`` interaction and a ``/command`` a slash
  command, each form-encoded, signed with the signing secret (v0 HMAC-SHA256, as Slack signs) and POSTed to
  the app's request URLs within Slack's 3 s; their ``response_url`` points back here, and what the app answers
  there (or in a command's HTTP answer) is applied as Slack applies it.

The channel page (``GET /`` and ``/channels/<name>``, sandbox/slack_page.py) shows the channels as Slack would
render them, with a "You are" picker among the demo users and working buttons: the whole loop without a
workspace.

    python -m sandbox.slack --port 8091 --token xoxb-demo --signing-secret S \\
        --interactions-url http://127.0.0.1:8000/slack/interactions \\
        --commands-url http://127.0.0.1:8000/slack/commands --users-file users.json

(``--token`` and ``--signing-secret`` default to ``$SLACK_STANDIN_TOKEN`` and ``$SLACK_STANDIN_SIGNING_SECRET``,
so a script can keep them out of the process list.)

Endpoints that are not Slack's, for the channel page and the tests:
    GET  /_standin/messages          every message (posts, thread replies, ephemerals, response_url answers)
    GET  /_standin/presses           every interaction and command sent to the app, with its answer
    POST /_standin/users             {"users": [{"id", "name", "email"}]}: who users.info and the page know
    POST /_standin/faults            {"method", "error"} or {"method", "status": 429, "retry_after"}, "times"
    POST /_standin/reset             forget messages, presses and faults
    POST /_standin/respond/<id>      a response_url: records what the app answers and applies it (5 answers)
    POST /_standin/press             {"user", "channel", "ts", "action_id", "block_id"?}: press a button
    POST /_standin/command           {"user", "channel", "text": "/runbook status"}: send a slash command
The last two answer JSON, or (given ``back``, as the page's forms do) redirect to the page.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BOT_USER_ID = "UCONTROLBOT"
BOT_ID = "BCONTROLBOT"
APP_ID = "ACONTROLPLANE"
SLACKBOT_USER_ID = "USLACKBOT"
TEAM_ID = "T0DEMO"
TEAM_DOMAIN = "demo"
# Slack gives up on a request URL after 3 s (and shows the user an error); the stand-in does the same.
DELIVERY_TIMEOUT_SECONDS = 3.0
# Slack's verification token is deprecated in favour of signatures but still sent; apps must not rely on it.
VERIFICATION_TOKEN = "standin-verification-token"
# A response_url takes up to 5 answers within 30 minutes of the interaction or command.
RESPONSE_URL_USES = 5
RESPONSE_URL_TTL_SECONDS = 30 * 60
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,31}$")
CHANNEL_ID = re.compile(r"^[CDG][A-Z0-9]{2,31}$")


def channel_id(name: str) -> str:
    """The id of channel ``name`` (with or without ``#``): stable, so a page or a test can name it too."""
    return "C" + hashlib.sha1(name.lstrip("#").lower().encode()).hexdigest()[:10].upper()


@dataclass
class Fault:
    error: str = ""
    status: int = 200
    retry_after: int = 1
    times: int = 1


@dataclass
class SlackState:
    """What the stand-in knows; every access holds ``lock`` (the server is threaded). ``responses`` maps a
    response_url's id to where its answers go: the channel, the user, and the message pressed (interactions)
    or the last answer posted (commands)."""

    token: str
    signing_secret: str = ""
    interactions_url: str = ""
    commands_url: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)  # id -> name, for the channels posted to by name
    faults: dict[str, Fault] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    presses: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_ts(self) -> str:
        # Slack's ts is "<unix seconds>.<6 digits>", unique per channel; a counter keeps them ordered.
        return f"{int(time.time())}.{next(self._clock):06d}"

    def channel(self, value: str, *, by_name: bool = True) -> str | None:
        """The channel id a method means: an id (a DM's ``D<user>``, or a channel's it has seen), a user id (the
        user's DM with the app), or, where Slack takes one (``by_name``), a channel name. As at Slack, messages
        live under the id: ``chat.update`` wants the id (a name is ``channel_not_found``, slack-sdk issue #696)."""
        value = value.strip()
        if USER_ID.match(value):
            return f"D{value}"
        if CHANNEL_ID.match(value):
            return value if value.startswith("D") or value in self.channels else None
        if not value or not by_name:
            return None
        cid = channel_id(value)
        self.channels[cid] = value.lstrip("#").lower()  # every named channel exists here
        return cid

    def find(self, channel: str, ts: str) -> dict[str, Any] | None:
        """A channel message (what chat.update and threads address)."""
        return next(
            (m for m in self.messages if m["type"] == "message" and m["channel"] == channel and m["ts"] == ts), None
        )

    def find_any(self, channel: str, ts: str) -> dict[str, Any] | None:
        """Any message shown in the channel, ephemerals and response_url answers included (what a press finds)."""
        return next((m for m in self.messages if m["channel"] == channel and m["ts"] == ts), None)


class BadRequest(Exception):
    """A press, command or control call the stand-in refuses; ``error`` is Slack-style snake case."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _blocks(value: Any) -> list[Any]:
    if isinstance(value, str):  # form-encoded calls carry blocks as a JSON string
        value = json.loads(value) if value else []
    return list(value or [])


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _post_message(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    channel = state.channel(str(args.get("channel") or ""))
    if channel is None:
        return {"ok": False, "error": "channel_not_found"}
    if not args.get("text") and not args.get("blocks"):
        return {"ok": False, "error": "no_text"}
    thread_ts = str(args.get("thread_ts") or "")
    if thread_ts and state.find(channel, thread_ts) is None:
        return {"ok": False, "error": "thread_not_found"}
    message = {
        "type": "message",
        "channel": channel,
        "ts": state.next_ts(),
        "thread_ts": thread_ts,
        "user": BOT_USER_ID,
        "text": str(args.get("text") or ""),
        "blocks": _blocks(args.get("blocks")),
        "edits": 0,
    }
    state.messages.append(message)
    return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}


def _update(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    channel = state.channel(str(args.get("channel") or ""), by_name=False)
    if channel is None:
        return {"ok": False, "error": "channel_not_found"}
    message = state.find(channel, str(args.get("ts") or ""))
    if message is None:
        return {"ok": False, "error": "message_not_found"}
    if "text" in args:
        message["text"] = str(args["text"] or "")
    if "blocks" in args:
        message["blocks"] = _blocks(args["blocks"])
    message["edits"] += 1
    return {"ok": True, "channel": message["channel"], "ts": message["ts"], "text": message["text"]}


def _ephemeral(state: SlackState, *, channel: str, to_user: str, text: str, blocks: list[Any], **extra: Any) -> str:
    ts = state.next_ts()
    state.messages.append(
        {
            "type": "ephemeral",
            "channel": channel,
            "ts": ts,
            "thread_ts": str(extra.pop("thread_ts", "") or ""),
            "user": extra.pop("user", BOT_USER_ID),
            "to_user": to_user,
            "text": text,
            "blocks": blocks,
            "edits": 0,
        }
    )
    return ts


def _post_ephemeral(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    channel = state.channel(str(args.get("channel") or ""))
    if channel is None:
        return {"ok": False, "error": "channel_not_found"}
    if not args.get("user"):
        return {"ok": False, "error": "user_not_in_channel"}
    ts = _ephemeral(
        state,
        channel=channel,
        to_user=str(args["user"]),
        text=str(args.get("text") or ""),
        blocks=_blocks(args.get("blocks")),
        thread_ts=args.get("thread_ts"),
    )
    return {"ok": True, "message_ts": ts}


def _users_info(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    user = state.users.get(str(args.get("user") or ""))
    if user is None:
        return {"ok": False, "error": "user_not_found"}
    name = user.get("name", "")
    profile = {"email": user.get("email", ""), "real_name": name, "display_name": name}
    return {"ok": True, "user": {"id": user["id"], "team_id": TEAM_ID, "name": name, "profile": profile}}


def _open_dm(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    users = str(args.get("users") or "")
    if not users or "," in users:
        return {"ok": False, "error": "not_enough_users" if not users else "not_implemented"}
    return {"ok": True, "channel": {"id": f"D{users}"}}


METHODS: dict[str, Callable[[SlackState, dict[str, Any]], dict[str, Any]]] = {
    "auth.test": lambda state, args: {"ok": True, "user_id": BOT_USER_ID, "team_id": TEAM_ID, "team": "demo"},
    "chat.postMessage": _post_message,
    "chat.update": _update,
    "chat.postEphemeral": _post_ephemeral,
    "users.info": _users_info,
    "conversations.open": _open_dm,
}


# ------------------------------------------------------------------------------------ demo users


def user_rows(data: Any) -> list[dict[str, str]]:
    """The demo users from ``{"users": [...]}`` or a bare list: each an ``id`` (U.../W...), a ``name`` and
    optionally an ``email``. Raises ValueError naming the first bad entry."""
    rows = data.get("users") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ValueError('expected {"users": [{"id", "name", "email"}, ...]}')
    users = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not USER_ID.match(str(row.get("id", ""))) or not row.get("name"):
            raise ValueError(f"users[{i}]: needs an id like U0RITA and a name")
        users.append({"id": str(row["id"]), "name": str(row["name"]), "email": str(row.get("email") or "")})
    return users


# ---------------------------------------------------------------------- Slack -> app: presses, commands


def with_ids(blocks: list[Any], ts: str) -> list[Any]:
    """The blocks as Slack stores them: a block without ``block_id``, or an interactive element without
    ``action_id``, gets a generated one (stable per message here, random at Slack)."""
    blocks = copy.deepcopy(blocks)
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        block.setdefault("block_id", hashlib.sha1(f"{ts}:{i}".encode()).hexdigest()[:5])
        elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
        if isinstance(block.get("accessory"), dict):
            elements.append(block["accessory"])
        for j, element in enumerate(elements):
            if isinstance(element, dict) and element.get("type") == "button":
                element.setdefault("action_id", hashlib.sha1(f"{block['block_id']}:{j}".encode()).hexdigest()[:5])
    return blocks


def _find_button(blocks: list[Any], action_id: str, block_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    for block in blocks:
        if not isinstance(block, dict) or (block_id and block.get("block_id") != block_id):
            continue
        elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
        if isinstance(block.get("accessory"), dict):
            elements.append(block["accessory"])
        for element in elements:
            if isinstance(element, dict) and element.get("type") == "button" and element.get("action_id") == action_id:
                return block, element
    raise BadRequest("action_not_found")


def _as_slack_message(message: dict[str, Any], blocks: list[Any]) -> dict[str, Any]:
    """A recorded message in the shape Slack puts in an interaction's ``message``."""
    shown: dict[str, Any] = {
        "type": "message",
        "subtype": "bot_message",
        "user": message.get("user", BOT_USER_ID),
        "bot_id": BOT_ID,
        "app_id": APP_ID,
        "team": TEAM_ID,
        "ts": message["ts"],
        "text": message["text"],
        "blocks": blocks,
    }
    if message.get("thread_ts"):
        shown["thread_ts"] = message["thread_ts"]
    if message.get("edits"):
        shown["edited"] = {"user": BOT_USER_ID, "ts": message["ts"]}
    return shown


def _user(state: SlackState, user_id: str) -> dict[str, Any]:
    user = state.users.get(user_id)
    if user is None:
        raise BadRequest("user_not_found")
    return user


def _new_response_url(state: SlackState, base_url: str, context: dict[str, Any]) -> str:
    response_id = secrets.token_urlsafe(12)
    state.responses[response_id] = {**context, "created": time.monotonic(), "uses": 0}
    return f"{base_url}/_standin/respond/{response_id}"


def _trigger_id() -> str:
    return f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"


@dataclass(frozen=True)
class Delivery:
    """What the app answered a request: its HTTP status (0 when none came), body, type, and the time taken."""

    status: int
    body: str
    content_type: str
    error: str
    elapsed_ms: int


def sign(secret: str, timestamp: str, body: str) -> str:
    """Slack's v0 signature: ``v0=`` + hex HMAC-SHA256 of ``v0:<timestamp>:<body>`` under the signing secret."""
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return f"v0={digest}"


def deliver(url: str, secret: str, body: str) -> Delivery:
    """POST a form-encoded body to the app, signed as Slack signs it, with Slack's 3 s timeout."""
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        url,
        data=body.encode(),
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": sign(secret, timestamp, body),
        },
    )
    started = time.monotonic()

    def elapsed() -> int:
        return round((time.monotonic() - started) * 1000)

    try:
        with urllib.request.urlopen(request, timeout=DELIVERY_TIMEOUT_SECONDS) as answer:
            text = answer.read(65536).decode(errors="replace")
            return Delivery(answer.status, text, answer.headers.get("Content-Type", ""), "", elapsed())
    except urllib.error.HTTPError as exc:
        text = exc.read(2048).decode(errors="replace")
        return Delivery(exc.code, text, exc.headers.get("Content-Type", ""), f"HTTP {exc.code}", elapsed())
    except TimeoutError:
        return Delivery(0, "", "", f"no answer within {DELIVERY_TIMEOUT_SECONDS:g} s", elapsed())
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            return Delivery(0, "", "", f"no answer within {DELIVERY_TIMEOUT_SECONDS:g} s", elapsed())
        return Delivery(0, "", "", f"unreachable: {reason}", elapsed())


def _check_configured(state: SlackState, url: str, what: str) -> None:
    if not url:
        raise BadRequest(f"no_{what}_url")  # start the stand-in with --interactions-url / --commands-url
    if not state.signing_secret:
        raise BadRequest("no_signing_secret")


def _record(state: SlackState, press: dict[str, Any], delivery: Delivery) -> dict[str, Any]:
    press.update(
        status=delivery.status, error=delivery.error, elapsed_ms=delivery.elapsed_ms, answer=delivery.body[:500]
    )
    state.presses.append(press)
    return press


def press(
    state: SlackState, *, base_url: str, user_id: str, channel: str, ts: str, action_id: str, block_id: str = ""
) -> dict[str, Any]:
    """Press a button as ``user_id``: send the app the ``block_actions`` interaction Slack would send, and
    record the press with the app's answer. A button's ``confirm`` dialog is the page's to show first."""
    with state.lock:
        _check_configured(state, state.interactions_url, "interactions")
        user = _user(state, user_id)
        channel = state.channel(channel) or ""
        message = state.find_any(channel, ts)
        if message is None or (message.get("to_user") and message["to_user"] != user_id):
            raise BadRequest("message_not_found")
        blocks = with_ids(message["blocks"], message["ts"])
        block, button = _find_button(blocks, action_id, block_id)
        ephemeral = bool(message.get("to_user"))
        context = {"kind": "interaction", "channel": channel, "user": user_id, "message_ts": ts}
        response_url = _new_response_url(state, base_url, context)
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user_id, "username": user["name"], "name": user["name"], "team_id": TEAM_ID},
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": ephemeral},
            "trigger_id": _trigger_id(),
            "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": state.channels.get(channel, "directmessage")},
            "state": {"values": {}},
            "response_url": response_url,
            "actions": [
                {
                    "action_id": button["action_id"],
                    "block_id": block["block_id"],
                    "text": button.get("text", {"type": "plain_text", "text": ""}),
                    "value": button.get("value", ""),
                    **({"style": button["style"]} if button.get("style") else {}),
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        if message.get("thread_ts"):
            payload["container"]["thread_ts"] = message["thread_ts"]
        if not ephemeral:  # Slack leaves the message out of a press on an ephemeral one
            payload["message"] = _as_slack_message(message, blocks)
        url, secret = state.interactions_url, state.signing_secret
    delivery = deliver(url, secret, urllib.parse.urlencode({"payload": json.dumps(payload)}))
    with state.lock:
        record = {
            "kind": "interaction",
            "user": user_id,
            "channel": channel,
            "ts": ts,
            "action_id": button["action_id"],
            "label": button.get("text", {}).get("text", ""),
            "payload": payload,
        }
        return _record(state, record, delivery)


def command(state: SlackState, *, base_url: str, user_id: str, channel: str, text: str) -> dict[str, Any]:
    """Send the app the slash command typed in ``channel`` (``/runbook status``) as Slack sends it, and show
    its answer: a JSON or text body is shown to the user (or the channel, ``response_type: in_channel``), a
    failure as Slackbot's "failed with the error" note, as Slack does."""
    name, _, argument = text.strip().partition(" ")
    if not re.fullmatch(r"/[a-z0-9_-]{1,31}", name):
        raise BadRequest("not_a_command")
    with state.lock:
        _check_configured(state, state.commands_url, "commands")
        user = _user(state, user_id)
        channel = state.channel(channel) or ""
        if not channel:
            raise BadRequest("channel_not_found")
        context = {"kind": "command", "channel": channel, "user": user_id, "message_ts": ""}
        response_url = _new_response_url(state, base_url, context)
        response_id = response_url.rsplit("/", 1)[1]
        fields = {
            "token": VERIFICATION_TOKEN,
            "team_id": TEAM_ID,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel,
            "channel_name": state.channels.get(channel, "directmessage"),
            "user_id": user_id,
            "user_name": user["name"],
            "command": name,
            "text": argument.strip(),
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": _trigger_id(),
        }
        url, secret = state.commands_url, state.signing_secret
    delivery = deliver(url, secret, urllib.parse.urlencode(fields))
    with state.lock:
        if delivery.status == 200 and delivery.body.strip():
            if delivery.content_type.startswith("application/json"):
                try:
                    answer = json.loads(delivery.body)
                except ValueError:
                    answer = None
                if isinstance(answer, dict):
                    respond(state, response_id, answer)
            else:
                respond(state, response_id, {"text": delivery.body.strip()})
        elif delivery.status != 200:
            reason = (
                "operation_timeout" if delivery.status == 0 and "no answer" in delivery.error else "dispatch_failed"
            )
            _ephemeral(
                state,
                channel=channel,
                to_user=user_id,
                text=f'{name} failed with the error "{reason}"',
                blocks=[],
                user=SLACKBOT_USER_ID,
            )
        record = {"kind": "command", "user": user_id, "channel": channel, "command": name, "text": fields["text"]}
        record["fields"] = fields
        return _record(state, record, delivery)


def use_response_url(state: SlackState, response_id: str) -> str:
    """Count an answer to a response_url the stand-in issued (the caller holds the lock): empty when it may be
    used, else why not (more than 5 answers, or after 30 minutes, as Slack limits them; Slack does not document
    its exact answer, the stand-in's is a 404 naming the reason). Ids it did not issue are not limited."""
    context = state.responses.get(response_id)
    if context is None:
        return ""
    if time.monotonic() - context["created"] > RESPONSE_URL_TTL_SECONDS:
        return "expired_url"
    if context["uses"] >= RESPONSE_URL_USES:
        return "used_url"
    context["uses"] += 1
    return ""


def respond(state: SlackState, response_id: str, args: dict[str, Any]) -> None:
    """An answer to a response_url (the caller holds the lock), applied as Slack applies it: recorded as a
    ``response`` entry; ``replace_original`` replaces the message pressed (a command's: its last answer),
    ``delete_original`` deletes it, anything else is a new message, ephemeral to the user unless
    ``response_type`` is ``in_channel``."""
    context = state.responses.get(response_id, {})
    replace, delete = _flag(args.get("replace_original")), _flag(args.get("delete_original"))
    response_type = str(args.get("response_type") or "ephemeral")
    channel = str(context.get("channel", ""))
    original_ts = str(context.get("message_ts", ""))
    original = state.find_any(channel, original_ts) if channel and original_ts else None
    entry = {
        "type": "response",
        "channel": channel,
        "ts": state.next_ts(),
        "thread_ts": str(args.get("thread_ts") or (original or {}).get("thread_ts") or ""),
        "user": BOT_USER_ID,
        "to_user": str(context.get("user", "")) if response_type != "in_channel" else "",
        "response_url": response_id,
        "text": str(args.get("text") or ""),
        "blocks": _blocks(args.get("blocks")),
        "replace_original": replace,
        "delete_original": delete,
        "response_type": response_type,
        "edits": 0,
    }
    state.messages.append(entry)
    if original is not None and delete:
        state.messages.remove(original)
    elif original is not None and replace:
        original["text"], original["blocks"] = entry["text"], entry["blocks"]
        original["edits"] += 1
    elif context.get("kind") == "command" and not delete:
        # A command has no message of its own: its answers are, and the next replace_original replaces the last.
        context["message_ts"] = entry["ts"]
        entry["replace_original"] = entry["delete_original"] = False


# ------------------------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        try:
            args = self._args(url.query)
        except ValueError:
            self._send(HTTPStatus.BAD_REQUEST, {"ok": False, "error": "invalid_json"})
            return
        state = self.server.state
        path = url.path.rstrip("/")
        if self.command == "GET" and (path == "" or path.startswith("/channels/")):
            self._page(urllib.parse.unquote(path.removeprefix("/channels/")) if path else "", args)
            return
        if path in ("/_standin/press", "/_standin/command") and self.command == "POST":
            self._send_to_app(path.removeprefix("/_standin/"), args)
            return
        if path.startswith("/_standin/"):
            self._control(path.removeprefix("/_standin/"), args)
            return
        method = path.rsplit("/", 1)[-1]
        handler = METHODS.get(method)
        if handler is None:
            self._send(HTTPStatus.NOT_FOUND, {"ok": False, "error": "unknown_method"})
            return
        with state.lock:
            state.calls.append(method)
            fault = state.faults.get(method)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del state.faults[method]
                if fault.status == 429:
                    self._send(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(fault.retry_after)})
                    return
                self._send(HTTPStatus.OK, {"ok": False, "error": fault.error or "internal_error"})
                return
            if self.headers.get("Authorization", "") != f"Bearer {state.token}":
                self._send(HTTPStatus.OK, {"ok": False, "error": "invalid_auth"})
                return
            answer = handler(state, args)
        self._send(HTTPStatus.OK, answer)

    def _page(self, channel: str, args: dict[str, Any]) -> None:
        from sandbox.slack_page import render_page  # here: that module imports this one

        state = self.server.state
        with state.lock:  # a snapshot: the page renders without holding the lock
            messages = copy.deepcopy(state.messages)
            users = copy.deepcopy(state.users)
            channels = dict(state.channels)
            presses = copy.deepcopy(state.presses[-20:])
        status, html = render_page(
            channel=channel,
            as_user=str(args.get("as") or ""),
            messages=messages,
            users=users,
            channels=channels,
            presses=presses,
        )
        data = html.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_to_app(self, what: str, args: dict[str, Any]) -> None:
        """A press or a command; the lock is not held while the app answers (it may call the Web API)."""
        state = self.server.state
        try:
            if what == "press":
                record = press(
                    state,
                    base_url=self.server.base_url,
                    user_id=str(args.get("user") or ""),
                    channel=str(args.get("channel") or ""),
                    ts=str(args.get("ts") or ""),
                    action_id=str(args.get("action_id") or ""),
                    block_id=str(args.get("block_id") or ""),
                )
            else:
                record = command(
                    state,
                    base_url=self.server.base_url,
                    user_id=str(args.get("user") or ""),
                    channel=str(args.get("channel") or ""),
                    text=str(args.get("text") or ""),
                )
        except BadRequest as exc:
            if self._back(args):
                with state.lock:  # shown on the page like an answer
                    state.presses.append(
                        {
                            "kind": "interaction" if what == "press" else "command",
                            "user": str(args.get("user") or ""),
                            "action_id": str(args.get("action_id") or ""),
                            "label": "",
                            "command": str(args.get("text") or ""),
                            "status": 0,
                            "error": exc.error,
                        }
                    )
                self._redirect(self._back(args))
            else:
                self._send(HTTPStatus.BAD_REQUEST, {"ok": False, "error": exc.error})
            return
        if self._back(args):
            self._redirect(self._back(args))
        else:
            self._send(HTTPStatus.OK, {"ok": True, "press": record})

    @staticmethod
    def _back(args: dict[str, Any]) -> str:
        back = str(args.get("back") or "")
        return back if back.startswith("/") and not back.startswith("//") else ""  # our own pages only

    def _control(self, what: str, args: dict[str, Any]) -> None:
        state = self.server.state
        if self.command != "POST" and what not in ("messages", "presses"):
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"ok": False, "error": "method_not_allowed"})
            return
        with state.lock:
            if what == "messages":
                self._send(HTTPStatus.OK, {"ok": True, "messages": state.messages, "calls": state.calls})
            elif what == "presses":
                self._send(HTTPStatus.OK, {"ok": True, "presses": state.presses})
            elif what == "users":
                try:
                    users = user_rows(args)
                except ValueError as exc:
                    self._send(HTTPStatus.BAD_REQUEST, {"ok": False, "error": "invalid_users", "detail": str(exc)})
                    return
                state.users.update({u["id"]: u for u in users})
                self._send(HTTPStatus.OK, {"ok": True})
            elif what == "faults":
                state.faults[str(args["method"])] = Fault(
                    error=str(args.get("error", "")),
                    status=int(args.get("status", 200)),
                    retry_after=int(args.get("retry_after", 1)),
                    times=int(args.get("times", 1)),
                )
                self._send(HTTPStatus.OK, {"ok": True})
            elif what == "reset":
                state.messages.clear()
                state.faults.clear()
                state.calls.clear()
                state.presses.clear()
                state.responses.clear()
                self._send(HTTPStatus.OK, {"ok": True})
            elif what.startswith("respond/"):
                refused = use_response_url(state, what.removeprefix("respond/"))
                if refused:
                    self._send(HTTPStatus.NOT_FOUND, {"ok": False, "error": refused})
                    return
                respond(state, what.removeprefix("respond/"), args)
                self._send(HTTPStatus.OK, {"ok": True})
            else:
                self._send(HTTPStatus.NOT_FOUND, {"ok": False, "error": "unknown_method"})

    def _args(self, query: str) -> dict[str, Any]:
        args: dict[str, Any] = dict(urllib.parse.parse_qsl(query))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not body:
            return args
        if self.headers.get("Content-Type", "").startswith("application/json"):
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                args.update(parsed)
        else:
            args.update(urllib.parse.parse_qsl(body.decode()))
        return args

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: SlackState) -> None:
        super().__init__(address, _Handler)
        self.state = state

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-request (a test ending, a browser leaving) is not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host!s}:{port}"


@dataclass
class SlackStandIn:
    """A running stand-in: ``api_url`` for ``SLACK_API_URL``, ``respond_url(id)`` for response_url,
    ``channel_url(name)`` for the channel page."""

    server: _Server
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    @property
    def state(self) -> SlackState:
        return self.server.state

    def respond_url(self, name: str) -> str:
        return f"{self.base_url}/_standin/respond/{name}"

    def channel_url(self, channel: str) -> str:
        """The page of a channel, by name (``#data-incidents``) or id."""
        name = self.state.channels.get(channel, channel) if CHANNEL_ID.match(channel) else channel.lstrip("#")
        return f"{self.base_url}/channels/{urllib.parse.quote(name)}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start(
    *,
    token: str,
    port: int = 0,
    host: str = "127.0.0.1",
    signing_secret: str = "",
    interactions_url: str = "",
    commands_url: str = "",
    users: list[dict[str, str]] | None = None,
) -> SlackStandIn:
    """Serve the stand-in from a thread of this process (port 0: any free one). Without ``signing_secret``
    and the request URLs, presses and commands are refused (the Web API works all the same)."""
    state = SlackState(
        token=token, signing_secret=signing_secret, interactions_url=interactions_url, commands_url=commands_url
    )
    state.users.update({u["id"]: u for u in user_rows(users or [])})
    server = _Server((host, port), state)
    # polled every 0.1 s (default 0.5) so that ``shutdown`` at a test's end returns at once
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="slack-standin", daemon=True
    )
    thread.start()
    return SlackStandIn(server, thread)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.slack", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument(
        "--token",
        default=os.environ.get("SLACK_STANDIN_TOKEN", ""),
        help="the bot token the control plane must present (default: $SLACK_STANDIN_TOKEN)",
    )
    parser.add_argument(
        "--signing-secret",
        default=os.environ.get("SLACK_STANDIN_SIGNING_SECRET", ""),
        help="the app's signing secret, which signs presses and commands (default: $SLACK_STANDIN_SIGNING_SECRET)",
    )
    parser.add_argument("--interactions-url", default="", help="the app's interactivity request URL")
    parser.add_argument("--commands-url", default="", help="the app's slash command request URL")
    parser.add_argument("--users-file", type=Path, help='demo users: {"users": [{"id", "name", "email"}]}')
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("--token (or $SLACK_STANDIN_TOKEN) is required")
    for name in ("interactions_url", "commands_url"):
        if getattr(args, name) and urllib.parse.urlsplit(getattr(args, name)).scheme not in ("http", "https"):
            parser.error(f"--{name.replace('_', '-')} must be an http(s) URL")
    users: list[dict[str, str]] = []
    if args.users_file:
        try:
            users = user_rows(json.loads(args.users_file.read_text()))
        except (OSError, ValueError) as exc:
            parser.error(f"--users-file {args.users_file}: {exc}")
    state = SlackState(
        token=args.token,
        signing_secret=args.signing_secret,
        interactions_url=args.interactions_url,
        commands_url=args.commands_url,
    )
    state.users.update({u["id"]: u for u in users})
    server = _Server((args.host, args.port), state)
    print(f"Slack stand-in on {server.base_url}/api/, channel page {server.base_url}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

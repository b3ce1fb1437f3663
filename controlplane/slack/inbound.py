"""What the Slack endpoints do before they answer (Slack wants an answer within 3 s; we aim for
milliseconds): check the signature over the raw body, read the few fields a press or a command needs,
drop a delivery already seen, and hand the work to a Celery task. No Slack API call, no connector call and
no plan here: the task does those and answers through the response_url.

A request whose signature does not hold is refused (401) before anything else is read from it; the refusal
is audited (``slack.signature_refused``) with the reason and the team/user it claims (from one address: the
first of each minute, then the 10th, 100th, ...), and nothing else is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.parse
from dataclasses import asdict, dataclass

import redis
from django.http import HttpRequest
from slack_sdk.signature import SignatureVerifier

from connectors.base import ConnectorError
from controlplane.audit.context import Channel, change_context
from controlplane.audit.services import audit_record
from controlplane.clientip import client_ip
from controlplane.redis import redis_client
from controlplane.slack.client import signing_secret

log = logging.getLogger(__name__)

MAX_AGE_SECONDS = 60 * 5  # Slack's recommendation, and what SignatureVerifier enforces
# Slack's retries of one delivery carry the same trigger_id; a double click is a second delivery of the same
# button on the same message by the same user within a few seconds.
DELIVERY_TTL_SECONDS = 60 * 10
PRESS_WINDOW_SECONDS = 5


@dataclass(frozen=True)
class Press:
    """One button press, as the task needs it (the message's blocks are not kept)."""

    action_id: str
    value: str
    block_id: str
    user_id: str
    team_id: str
    channel_id: str
    message_ts: str
    response_url: str
    trigger_id: str
    request_id: str = ""

    def as_task_arg(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Command:
    """One slash command invocation."""

    command: str
    text: str
    user_id: str
    team_id: str
    channel_id: str
    response_url: str
    trigger_id: str
    request_id: str = ""

    def as_task_arg(self) -> dict[str, str]:
        return asdict(self)


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify(request: HttpRequest) -> None:
    """Raise Refused naming why, unless the request carries Slack's valid v0 signature of its raw body
    made within the last 5 minutes."""
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    if not timestamp or not signature:
        raise Refused("missing signature headers")
    if not timestamp.isdigit():
        raise Refused("malformed timestamp")
    if abs(time.time() - int(timestamp)) > MAX_AGE_SECONDS:
        raise Refused("stale timestamp (more than 5 minutes off)")
    try:
        secret = signing_secret()
    except (ConnectorError, ValueError):
        log.error("SLACK_SIGNING_SECRET_REF is not set or cannot be read: every Slack request is refused")
        raise Refused("no signing secret configured") from None
    try:
        valid = SignatureVerifier(secret).is_valid(body=request.body, timestamp=timestamp, signature=signature)
    except UnicodeDecodeError:
        valid = False
    if not valid:
        raise Refused("signature mismatch")


def _claimed(body: bytes) -> dict[str, str]:
    """The team and user a refused request claims, when its body can be read (for the audit row only)."""
    try:
        form = urllib.parse.parse_qs(body.decode(), max_num_fields=50)
        if "payload" in form:
            payload = json.loads(form["payload"][0])
            team, user = (payload.get("team") or {}).get("id"), (payload.get("user") or {}).get("id")
        else:
            team, user = form.get("team_id", [""])[0], form.get("user_id", [""])[0]
    except (ValueError, AttributeError, TypeError):
        return {}
    return {k: str(v)[:40] for k, v in (("team_id", team), ("user_id", user)) if v}


REFUSAL_WINDOW_S = 60


def _refusals_this_window(ip: str) -> int | None:
    """How many refused requests came from ``ip`` in the current minute, this one included (None when Redis
    cannot say: then every refusal is audited). The key is a throttle counter, gone two windows later."""
    key = f"throttle:slack-refused:{ip}:{int(time.time() // REFUSAL_WINDOW_S)}"
    try:
        pipe = redis_client().pipeline()
        pipe.incr(key)
        pipe.expire(key, 2 * REFUSAL_WINDOW_S)
        return int(pipe.execute()[0])
    except redis.RedisError:
        return None


def audit_refusal(request: HttpRequest, reason: str) -> None:
    """Audit a refused request: from one address, the first of each minute, then the 10th, 100th, ... with
    the count so far, so a flood of forged requests writes a handful of audit rows, not one each (every
    refusal is logged)."""
    ip = client_ip(request)
    count = _refusals_this_window(ip)
    log.warning("Slack request to %s refused (%s) from %s; %s from there this minute", request.path, reason, ip, count)
    if count is not None and str(count).rstrip("0") != "1":
        return
    with change_context(channel=Channel.SLACK, actor_name="anonymous", request_id=getattr(request, "request_id", None)):
        audit_record(
            event="slack.signature_refused",
            object_type="slack.request",
            object_repr=request.path,
            after={"reason": reason, "ip": ip, "refusals_this_minute": count, **_claimed(request.body)},
        )


def _form(request: HttpRequest) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(request.body.decode(), max_num_fields=50).items()}


def parse_press(request: HttpRequest) -> Press | None:
    """The press of a ``block_actions`` payload (other interaction types are not ours: None)."""
    payload = json.loads(_form(request).get("payload", "") or "{}")
    if payload.get("type") != "block_actions" or not payload.get("actions"):
        return None
    action = payload["actions"][0]
    container = payload.get("container") or {}
    message = payload.get("message") or {}
    return Press(
        action_id=str(action.get("action_id", "")),
        value=str(action.get("value", "")),
        block_id=str(action.get("block_id", "")),
        user_id=str((payload.get("user") or {}).get("id", "")),
        team_id=str((payload.get("team") or {}).get("id", "")),
        channel_id=str((payload.get("channel") or {}).get("id", "") or container.get("channel_id", "")),
        message_ts=str(message.get("ts", "") or container.get("message_ts", "")),
        response_url=str(payload.get("response_url", "")),
        trigger_id=str(payload.get("trigger_id", "") or action.get("action_ts", "")),
        request_id=getattr(request, "request_id", ""),
    )


def parse_command(request: HttpRequest) -> Command:
    form = _form(request)
    return Command(
        command=form.get("command", ""),
        text=form.get("text", "").strip(),
        user_id=form.get("user_id", ""),
        team_id=form.get("team_id", ""),
        channel_id=form.get("channel_id", ""),
        response_url=form.get("response_url", ""),
        trigger_id=form.get("trigger_id", ""),
        request_id=getattr(request, "request_id", ""),
    )


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def first_delivery(item: Press | Command) -> bool:
    """True once per delivery: a retry (same trigger_id, ``X-Slack-Retry-Num`` or not) and, for a press, a
    second press of the same button on the same message by the same user within a few seconds are dropped.
    One round trip to Redis (SET NX with an expiry per key)."""
    pipe = redis_client().pipeline(transaction=False)
    if item.trigger_id:
        pipe.set(f"slack:delivery:{_digest(item.team_id, item.trigger_id)}", 1, nx=True, ex=DELIVERY_TTL_SECONDS)
    if isinstance(item, Press):
        press = _digest(item.team_id, item.user_id, item.channel_id, item.message_ts, item.action_id, item.value)
        pipe.set(f"slack:press:{press}", 1, nx=True, ex=PRESS_WINDOW_SECONDS)
    return all(pipe.execute())

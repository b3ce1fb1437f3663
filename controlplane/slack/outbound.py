"""Sending to Slack: an outbox in the database, delivered in order per channel by Celery.

Callers enqueue (``post``, ``update``, ``respond``, ``ephemeral``): a row in ``SlackOutbox`` and, once the
caller's transaction commits, a ``deliver_queue`` task for its queue. Nothing here calls Slack on the
caller's path, so a slow or absent Slack never delays nor fails an action, an alert or a button press.

Delivery (``outbox_deliver``): one task at a time per queue (a Redis lock), rows in id order, so a thread
reply or an update always follows the post it needs (its ``ts``). Slack's answers:
- HTTP 429: the row waits ``Retry-After`` seconds (``not_before``) and the queue resumes then; nothing is
  dropped and nothing overtakes it (https://api.slack.com/apis/rate-limits);
- a network error, a timeout or a transient ``ok: false`` (``internal_error``, ``service_unavailable`` ...):
  retried with backoff (2, 4, 8 ... up to 300 s), for as long as it takes. A network error or timeout also
  pauses every queue for that backoff (``PAUSE_KEY``): while Slack cannot be reached, one call per pause ties
  up a worker for at most ``SLACK_TIMEOUT_SECONDS``, not one per channel (the workers run actions too);
- any other ``ok: false`` (``channel_not_found``, ``invalid_auth``, ``not_in_channel`` ...): the row is marked
  failed with Slack's error (admin, ``/admin/slack/slackoutbox/``) and logged; the queue moves on.
A beat task (``outbox_kick_pending``) restarts queues whose task was lost (broker outage, worker killed).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
from datetime import timedelta
from typing import Any, cast

from django.db import transaction
from django.utils import timezone
from redis.exceptions import LockError, RedisError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from controlplane.redis import redis_client
from controlplane.slack.client import slack_enabled, web_client
from controlplane.slack.models import SlackOutbox, SlackPost

log = logging.getLogger(__name__)

RESPONSE_QUEUE = "response_url"  # answers to interactions: their own queue, they name no channel
# How long a delivering task holds its queue without progress; renewed after every message sent.
LOCK_SECONDS = 60
BATCH = 50  # messages a task sends before it hands the queue to a fresh task (fair to other queues)
MAX_BACKOFF_SECONDS = 300
PAUSE_KEY = "slack:outbox:unreachable"  # set (with a TTL) while Slack cannot be reached: every queue waits
# ``ok: false`` errors that say "try again later" rather than "this request is wrong"
# (https://api.slack.com/methods/chat.postMessage#errors).
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited", "team_added_to_org"}
)


# ------------------------------------------------------------------------------------------ enqueue


def _enqueue(
    *, queue: str, method: str, body: dict[str, Any], post: SlackPost | None = None, thread_of: SlackPost | None = None
) -> SlackOutbox:
    row = SlackOutbox.objects.create(queue=queue[:80], method=method, body=body, post=post, thread_of=thread_of)
    transaction.on_commit(lambda: kick(queue))
    return row


def queue_of(post: SlackPost) -> str:
    """The queue of the message ``post`` was posted as: its thread replies and updates go behind it."""
    first = SlackOutbox.objects.filter(post=post, method=SlackOutbox.Method.POST).order_by("id").first()
    return first.queue if first is not None else post.channel


def post(
    channel: str,
    text: str,
    blocks: list[dict[str, Any]] | None,
    *,
    thread_of: SlackPost | None = None,
    post: SlackPost | None = None,
) -> SlackOutbox | None:
    """Post a message in ``channel`` (a channel id or name, or a user id for a direct message), in the thread
    of ``thread_of`` if given. ``post``: the SlackPost this message becomes (saved here if new); its ``ts`` and
    ``channel`` (Slack's channel id) are filled once Slack answered. None when Slack is off."""
    if not slack_enabled():
        return None
    queue = queue_of(thread_of) if thread_of is not None else channel
    if post is not None and post.pk is None:
        post.channel = post.channel or channel
        post.save()
    body = {"channel": channel, "text": text, "blocks": blocks or []}
    return _enqueue(queue=queue, method=SlackOutbox.Method.POST, body=body, post=post, thread_of=thread_of)


def update(post: SlackPost, text: str, blocks: list[dict[str, Any]] | None) -> SlackOutbox | None:
    """Replace a posted message's text and blocks (``chat.update``), after every message queued before."""
    if not slack_enabled():
        return None
    body = {"text": text, "blocks": blocks or []}
    return _enqueue(queue=queue_of(post), method=SlackOutbox.Method.UPDATE, body=body, post=post)


def respond(response_url: str, body: dict[str, Any]) -> SlackOutbox | None:
    """Answer an interaction through its ``response_url`` (``replace_original``, ``response_type`` ... in
    ``body``)."""
    if not slack_enabled():
        return None
    return _enqueue(queue=RESPONSE_QUEUE, method=SlackOutbox.Method.RESPOND, body={"url": response_url, **body})


def ephemeral(
    channel: str, slack_user_id: str, text: str, blocks: list[dict[str, Any]] | None = None
) -> SlackOutbox | None:
    """A message in ``channel`` that only ``slack_user_id`` sees (``chat.postEphemeral``)."""
    if not slack_enabled():
        return None
    body = {"channel": channel, "user": slack_user_id, "text": text, "blocks": blocks or []}
    return _enqueue(queue=channel, method=SlackOutbox.Method.EPHEMERAL, body=body)


def kick(queue: str, countdown: float = 0) -> None:
    """Start (or resume after ``countdown`` s) the delivery of ``queue``. Never raises: a lost kick is made
    up by ``outbox_kick_pending``."""
    from controlplane.slack.tasks import deliver_queue

    try:
        deliver_queue.apply_async(args=(queue,), countdown=max(0.0, countdown))
    except Exception:
        log.exception("could not queue the Slack delivery of %s; the periodic sweep will", queue)


# ----------------------------------------------------------------------------------------- delivery


def _due(queue: str) -> SlackOutbox | None:
    return (
        SlackOutbox.objects.select_related("post", "thread_of")
        .filter(queue=queue, state=SlackOutbox.State.PENDING)
        .order_by("id")
        .first()
    )


def outbox_deliver(*, queue: str) -> None:
    """Send ``queue``'s pending messages in order, as the only sender of that queue; see the module doc."""
    try:
        lock = redis_client().lock(f"slack:outbox:{queue}", timeout=LOCK_SECONDS, blocking=False)
        if not lock.acquire():
            return  # its holder sends it: it looks at the queue again after letting go
    except RedisError:
        log.warning("Redis unreachable: Slack queue %s waits for the periodic sweep", queue)
        return
    again_in: float | None = None
    try:
        paused = cast(int, redis_client().pttl(PAUSE_KEY))  # ms; negative when not set
        again_in = _send_batch(queue, lock) if paused <= 0 else paused / 1000
    except Exception:
        log.exception("Slack delivery of %s stopped; it resumes in %s s", queue, MAX_BACKOFF_SECONDS)
        again_in = MAX_BACKOFF_SECONDS
    finally:
        with contextlib.suppress(LockError, RedisError):
            lock.release()
    if again_in is None and _due(queue) is not None:
        again_in = 0  # enqueued while we held the lock: its own kick found the queue taken
    if again_in is not None:
        kick(queue, countdown=again_in)


def _send_batch(queue: str, lock: Any) -> float | None:
    """Send up to BATCH of the queue's messages; the seconds after which the queue is to be tried again, or
    None when it is empty."""
    client = web_client()
    for _ in range(BATCH):
        row = _due(queue)
        if row is None:
            return None
        now = timezone.now()
        if row.not_before is not None and row.not_before > now:
            return (row.not_before - now).total_seconds()
        wait = _send(client, row)
        if wait is not None:
            return wait
        lock.reacquire()
    return 0


def _send(client: WebClient, row: SlackOutbox) -> float | None:
    """Make ``row``'s call. None when the row is done (sent, or failed for good); otherwise the seconds to
    wait before the queue is tried again (the row stays first, pending)."""
    try:
        answer = _call(client, row)
    except _Wait as exc:
        return _later(row, exc.seconds, "rate limited (429)")
    except _Refused as exc:
        _failed(row, exc.error)
        return None
    except SlackApiError as exc:
        response = exc.response
        if response.status_code == 429:
            retry_after = _seconds(response.headers.get("Retry-After") or response.headers.get("retry-after"))
            log.info("Slack rate-limited queue %s: waiting %s s", row.queue, retry_after)
            return _later(row, retry_after, "rate limited (429)")
        error = str(response.get("error") or f"HTTP {response.status_code}")
        if error in TRANSIENT_ERRORS or response.status_code >= 500:
            return _later(row, _backoff(row), error)
        _failed(row, error)
        return None
    except (SlackClientError, OSError, http.client.HTTPException) as exc:
        wait = _backoff(row)
        with contextlib.suppress(RedisError):
            redis_client().set(PAUSE_KEY, row.queue, px=int(wait * 1000))
        return _later(row, wait, f"{type(exc).__name__}: {exc}")
    now = timezone.now()
    if row.method == SlackOutbox.Method.POST and row.post is not None:
        SlackPost.objects.filter(pk=row.post.pk).update(
            ts=str(answer.get("ts") or ""), channel=str(answer.get("channel") or row.post.channel), updated_at=now
        )
    SlackOutbox.objects.filter(pk=row.pk).update(state=SlackOutbox.State.SENT, sent_at=now, attempts=row.attempts + 1)
    return None


class _Wait(Exception):
    """Slack asked to wait (429) where slack_sdk does not raise SlackApiError (a response_url)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class _Refused(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _call(client: WebClient, row: SlackOutbox) -> dict[str, Any]:
    body = row.body
    Method = SlackOutbox.Method
    if row.method == Method.POST:
        thread_ts = None
        channel = body["channel"]
        if row.thread_of is not None:
            if not row.thread_of.ts:
                raise _Refused("the thread's first message was never posted (see the failed row before this one)")
            thread_ts, channel = row.thread_of.ts, row.thread_of.channel
        answer = client.chat_postMessage(
            channel=channel, text=body["text"], blocks=body["blocks"] or None, thread_ts=thread_ts
        )
        return dict(answer.data)  # type: ignore[arg-type]
    if row.method == Method.UPDATE:
        if row.post is None or not row.post.ts:
            raise _Refused("the message to update was never posted (see the failed row before this one)")
        answer = client.chat_update(channel=row.post.channel, ts=row.post.ts, text=body["text"], blocks=body["blocks"])
        return dict(answer.data)  # type: ignore[arg-type]
    if row.method == Method.EPHEMERAL:
        return dict(
            client.chat_postEphemeral(
                channel=body["channel"], user=body["user"], text=body["text"], blocks=body["blocks"] or None
            ).data  # type: ignore[arg-type]
        )
    payload = {k: v for k, v in body.items() if k != "url"}
    webhook = WebhookClient(body["url"], timeout=client.timeout).send_dict(payload)
    if webhook.status_code == 429:
        raise _Wait(_seconds(webhook.headers.get("Retry-After") or webhook.headers.get("retry-after")))
    if webhook.status_code >= 500:
        raise http.client.HTTPException(f"response_url answered HTTP {webhook.status_code}")
    if webhook.status_code != 200:
        raise _Refused(f"response_url answered HTTP {webhook.status_code}: {webhook.body[:200]}")
    return {}


def _seconds(value: Any) -> float:
    try:
        return max(1.0, float(value))
    except (TypeError, ValueError):
        return 1.0


def _backoff(row: SlackOutbox) -> float:
    return float(min(2 ** (row.attempts + 1), MAX_BACKOFF_SECONDS))


def _later(row: SlackOutbox, seconds: float, error: str) -> float:
    not_before = timezone.now() + timedelta(seconds=seconds)
    SlackOutbox.objects.filter(pk=row.pk).update(attempts=row.attempts + 1, not_before=not_before, error=error[:2000])
    return seconds


def _failed(row: SlackOutbox, error: str) -> None:
    log.error("Slack refused %s to %s (outbox row %s): %s", row.method, row.queue, row.pk, error)
    SlackOutbox.objects.filter(pk=row.pk).update(
        state=SlackOutbox.State.FAILED, attempts=row.attempts + 1, error=error[:2000], sent_at=timezone.now()
    )


def outbox_kick_pending() -> list[str]:
    """Restart every queue with a message due (its task lost to a broker outage or a killed worker); the
    queue's lock makes a kick of a queue being delivered harmless."""
    now = timezone.now()
    queues = list(
        SlackOutbox.objects.filter(state=SlackOutbox.State.PENDING)
        .exclude(not_before__gt=now)
        .order_by()
        .values_list("queue", flat=True)
        .distinct()
    )
    for queue in queues:
        kick(queue)
    return queues

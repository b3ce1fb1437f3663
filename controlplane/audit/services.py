"""Writing and verifying the audit chain."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, models, transaction
from django.utils import timezone

from connectors.secrets import validate_secret_ref
from controlplane.audit import context
from controlplane.audit.models import AuditChainHead, AuditEvent
from controlplane.redis import redis_client

GENESIS = "0" * 64
CENSORED = "********"
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|credential", re.I)


def canonical_json(value: Any) -> str:
    """The one serialization that is hashed: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret value (a connection's resolved secrets) masked: for
    messages from the outside world (a connector's log line or error) before they are stored or logged."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, CENSORED)
    return text


def censor(value: Any) -> Any:
    """Replace the value of every secret-looking key with a fixed mask, recursively.

    Secret *references* (``env:NAME``, ``file:/path``) are kept: they name where a secret lives and are
    what an auditor needs to see; the secret itself never reaches this function's callers' storage.
    """
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and _SECRET_KEY.search(key) and not _is_reference_tree(item):
                out[key] = CENSORED
            else:
                out[str(key)] = censor(item)
        return out
    if isinstance(value, list | tuple):
        return [censor(item) for item in value]
    return value


def _is_reference_tree(value: Any) -> bool:
    if isinstance(value, Mapping):
        return all(_is_reference_tree(v) for v in value.values())
    if isinstance(value, str):
        try:
            validate_secret_ref(value)
        except ValueError:
            return False
        return True
    return value is None


def _normalize(value: Any) -> Any:
    """Round-trip through canonical JSON so what is hashed is exactly what the JSON column returns."""
    return None if value is None else json.loads(canonical_json(censor(value)))


def _payload(event: AuditEvent) -> dict[str, Any]:
    at = event.at
    return {
        "seq": event.seq,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "channel": event.channel,
        "request_id": event.request_id,
        "event": event.event,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "object_repr": event.object_repr,
        "before": event.before,
        "after": event.after,
        "reason": event.reason,
        "prev_hash": event.prev_hash,
    }


def compute_hash(event: AuditEvent) -> str:
    digest = hashlib.sha256()
    digest.update(event.prev_hash.encode())
    digest.update(canonical_json(_payload(event)).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    """One event to append: what happened (``event``) to which object, before/after and why."""

    event: str
    obj: models.Model | None = None
    object_type: str = ""
    object_id: str = ""
    object_repr: str = ""
    before: Any = None
    after: Any = None
    reason: str = ""


def audit_record(
    *,
    event: str,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    before: Any = None,
    after: Any = None,
    reason: str = "",
) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction (opening one if there is none).

    The actor, channel and request id come from the current change context. Locking the chain head
    serializes concurrent writers; the lock is held until the caller's transaction commits, so the
    audit row and the change it records land together or not at all.
    """
    entry = AuditEntry(event, obj, object_type, object_id, object_repr, before, after, reason)
    return audit_record_many([entry])[0]


def audit_record_many(entries: list[AuditEntry]) -> list[AuditEvent]:
    """Append several events under one lock of the chain head (see ``audit_record``): the head is read
    with ``SELECT ... FOR UPDATE``, the events are inserted with one ``bulk_create``, and the head moves
    to the last of them."""
    if not entries:
        return []
    ctx = context.current()
    user = ctx.user if ctx.user is not None and ctx.user.is_authenticated else None
    # No savepoint: the caller's transaction is the unit; a failure here must roll the change back too.
    with transaction.atomic(savepoint=False):
        head = _locked_head()
        seq, prev_hash = head.seq, head.hash
        now = _utc_now()
        rows: list[AuditEvent] = []
        for entry in entries:
            obj = entry.obj
            seq += 1
            row = AuditEvent(
                seq=seq,
                at=now,
                actor_id=user.pk if user is not None else None,
                actor_name=ctx.actor_name[:150],
                channel=ctx.channel,
                request_id=ctx.request_id[:64],
                event=entry.event,
                object_type=entry.object_type or (obj._meta.label_lower if obj is not None else ""),
                object_id=entry.object_id or (str(obj.pk) if obj is not None else ""),
                object_repr=(entry.object_repr or (str(obj) if obj is not None else ""))[:300],
                before=_normalize(entry.before),
                after=_normalize(entry.after),
                reason=entry.reason,
                prev_hash=prev_hash,
            )
            row.hash = prev_hash = compute_hash(row)
            rows.append(row)
        AuditEvent.objects.bulk_create(rows)
        AuditChainHead.objects.filter(id=1).update(seq=rows[-1].seq, hash=rows[-1].hash)
    return rows


def _locked_head() -> AuditChainHead:
    """The chain's tip, locked until the transaction ends."""
    head = AuditChainHead.objects.select_for_update().filter(id=1).first()
    if head is None:  # the first event ever (migration 0005 makes the row): create it, then lock it
        AuditChainHead.objects.get_or_create(id=1)
        head = AuditChainHead.objects.select_for_update().get(id=1)
    return head


def _utc_now() -> datetime:
    # Microsecond precision is what Postgres keeps, so the hashed value survives a read.
    return timezone.now()


@dataclass(frozen=True)
class ChainVerdict:
    """Result of walking the chain: ``ok``, how many events were checked, and the first bad one."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    first_bad_id: int | None = None
    problem: str = ""
    last_hash: str = GENESIS

    def describe(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.checked} events verified"
        return f"audit chain BROKEN at event #{self.first_bad_seq} (id {self.first_bad_id}): {self.problem}"


def _iter_events(after_seq: int = 0, batch: int = 2000) -> Iterator[AuditEvent]:
    last_seq = after_seq
    while True:
        rows = list(AuditEvent.objects.filter(seq__gt=last_seq).order_by("seq")[:batch])
        if not rows:
            return
        yield from rows
        last_seq = rows[-1].seq


def audit_verify_chain(*, since: tuple[int, str] | None = None) -> ChainVerdict:
    """Recompute every hash in ``seq`` order; name the first event that was edited, removed or moved.

    ``since=(seq, hash)`` continues from an event verified earlier (a checkpoint) instead of the genesis:
    cheap enough for every page view, while the periodic full pass catches edits of older events.
    """
    checked_seq, prev_hash = since or (0, GENESIS)
    if since is not None:
        anchor = AuditEvent.objects.filter(seq=checked_seq).values_list("hash", flat=True).first()
        if anchor != prev_hash:
            return ChainVerdict(False, 0, checked_seq, None, "the last verified event changed since it was verified")
    expected_seq, checked = checked_seq + 1, checked_seq
    for row in _iter_events(after_seq=checked_seq):
        if row.seq != expected_seq:
            return ChainVerdict(False, checked, row.seq, row.id, f"expected event #{expected_seq}: events missing")
        if row.prev_hash != prev_hash:
            return ChainVerdict(False, checked, row.seq, row.id, "does not link to the previous event")
        if compute_hash(row) != row.hash:
            return ChainVerdict(False, checked, row.seq, row.id, "content does not match its hash (edited)")
        prev_hash, expected_seq, checked = row.hash, expected_seq + 1, checked + 1
    head = AuditChainHead.objects.filter(id=1).first()
    if head is not None and (head.seq != checked or head.hash != prev_hash):
        return ChainVerdict(
            False, checked, checked + 1, None, f"head records {head.seq} events: events removed at the end"
        )
    return ChainVerdict(True, checked, last_hash=prev_hash)


_VERDICT_KEY = "audit:chain-verdict"


@dataclass(frozen=True)
class ChainStatus:
    """What the audit page shows: the verdict, and when the whole chain was last walked from genesis."""

    verdict: ChainVerdict | None
    full_verified_at: datetime | None
    pending: bool = False  # the whole chain is being walked in the background (too long for a page view)


# One full walk at a time, queued or running: a Redis key (SET NX with an expiry) holding the walk's token.
# The expiry only matters when a worker died mid-walk; it is far longer than any walk (a million events take
# tens of seconds), so a live walk never loses it.
VERIFY_LOCK_KEY = "audit:chain-verify"
VERIFY_LOCK_SECONDS = 30 * 60
_RELEASE_IF_MINE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def _verify_lock_take(token: str) -> bool:
    return bool(redis_client().set(VERIFY_LOCK_KEY, token, nx=True, ex=VERIFY_LOCK_SECONDS))


def _verify_lock_release(token: str) -> None:
    redis_client().eval(_RELEASE_IF_MINE, 1, VERIFY_LOCK_KEY, token)


def audit_verify_full(*, lock_token: str | None = None) -> ChainVerdict | None:
    """Walk the whole chain (Celery beat runs this periodically) and remember the result as checkpoint.

    None, doing nothing, when another full walk is queued or running. ``lock_token``: the lock that
    ``audit_verify_full_queue`` took for this walk when it queued it."""
    token = lock_token or uuid.uuid4().hex
    mine = lock_token is not None and redis_client().get(VERIFY_LOCK_KEY) == token.encode()
    if not mine and not _verify_lock_take(token):
        return None
    try:
        verdict = audit_verify_chain()
        cache.set(_VERDICT_KEY, {"verdict": verdict, "full_at": timezone.now()}, timeout=None)
        return verdict
    finally:
        _verify_lock_release(token)


def audit_verify_full_queue() -> bool:
    """Queue a full walk for a worker unless one is queued or running; whether it was queued now. The walk's
    lock is taken here and handed to the task, so page views meanwhile queue nothing more."""
    from controlplane.audit.tasks import verify_audit_chain

    token = uuid.uuid4().hex
    if not _verify_lock_take(token):
        return False
    try:
        verify_audit_chain.delay(lock_token=token)
    except BaseException:
        _verify_lock_release(token)  # nothing queued: let the next page view try again
        raise
    return True


# A page view walks the whole chain itself only while it is this short (a few hundred ms at most); a longer
# one is walked by a worker and the page says so (a million events take tens of seconds).
FULL_WALK_IN_REQUEST = 20_000


def _head_seq() -> int:
    return int(AuditChainHead.objects.filter(id=1).values_list("seq", flat=True).first() or 0)


def _full_walk_for_page() -> ChainStatus:
    """Walk a short chain now, or have a worker walk a long one; either way, while another full walk is
    queued or running, the page says one is running instead of starting another."""
    if _head_seq() <= FULL_WALK_IN_REQUEST:
        verdict = audit_verify_full()
        if verdict is not None:
            return ChainStatus(verdict, timezone.now())
    else:
        audit_verify_full_queue()
    return ChainStatus(None, None, pending=True)


def audit_chain_status() -> ChainStatus:
    """The chain's status for a page view: verify only what came after the remembered checkpoint, and
    fall back to a full walk when there is no checkpoint or it was not intact (in a worker when the chain
    is long: the page then says the verification is running)."""
    remembered = cache.get(_VERDICT_KEY)
    if remembered and not remembered["verdict"].ok and _head_seq() > FULL_WALK_IN_REQUEST:
        return ChainStatus(remembered["verdict"], remembered["full_at"])  # a long chain: the last walk's word
    if not remembered or not remembered["verdict"].ok:
        return _full_walk_for_page()
    previous: ChainVerdict = remembered["verdict"]
    verdict = audit_verify_chain(since=(previous.checked, previous.last_hash))
    if not verdict.ok:
        # Never report a break from the shortcut alone: the full walk names the first bad event for sure.
        return _full_walk_for_page()
    cache.set(_VERDICT_KEY, {"verdict": verdict, "full_at": remembered["full_at"]}, timeout=None)
    return ChainStatus(verdict, remembered["full_at"])


# ------------------------------------------------------------------------------------ the app's database role

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def audit_app_role_grant(*, role: str, using: str = "default") -> None:
    """Give the application's database role (web, worker, beat) what it needs and nothing more, on every table
    of the schema: read and write the app's tables, but only SELECT and INSERT on audit events and SELECT and
    UPDATE on the chain head (whose trigger lets it only move forward), read-only migration history, the
    sequences. It owns nothing, so it cannot ALTER (disable triggers), TRUNCATE or grant; not being a superuser
    it cannot set ``session_replication_role``. Idempotent: everything is revoked and granted again in one
    transaction, so tables added by a migration are covered. Run by the owner after every ``migrate``
    (``DATABASE_APP_ROLE``). Raises ``ImproperlyConfigured`` for a role that would defeat it."""
    if not _ROLE_NAME.match(role):
        raise ImproperlyConfigured(f"DATABASE_APP_ROLE={role!r} is not a role name (lower case letters, digits, _)")
    connection = connections[using]
    q = connection.ops.quote_name
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_schema(), r.rolsuper, r.rolname = current_user,"
            " EXISTS (SELECT 1 FROM pg_class c WHERE c.relowner = r.oid"
            " AND c.relnamespace = current_schema()::text::regnamespace),"
            " pg_has_role(r.oid, (SELECT relowner FROM pg_class WHERE oid = %s::regclass), 'MEMBER'),"
            " has_parameter_privilege(r.oid, 'session_replication_role', 'SET')"
            " FROM pg_roles r WHERE r.rolname = %s",
            [AuditEvent._meta.db_table, role],
        )
        found = cursor.fetchone()
        if found is None:
            raise ImproperlyConfigured(f"DATABASE_APP_ROLE={role!r}: no such database role; create it first")
        schema, *flaws = found
        reasons = [
            "is a superuser",
            "runs the migrations",
            "owns tables",
            "is a member of the tables' owner",
            "may set session_replication_role",
        ]
        why = [reason for reason, flaw in zip(reasons, flaws, strict=True) if flaw]
        if why:
            raise ImproperlyConfigured(f"DATABASE_APP_ROLE={role!r} {why[0]}: the app's role must own nothing")
        who, where = q(role), q(schema)
        for statement in (
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {where} FROM {who}",
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {where} FROM {who}",
            f"GRANT USAGE ON SCHEMA {where} TO {who}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {where} TO {who}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {where} TO {who}",
            f"REVOKE UPDATE, DELETE ON {q(AuditEvent._meta.db_table)} FROM {who}",
            f"REVOKE INSERT, DELETE ON {q(AuditChainHead._meta.db_table)} FROM {who}",
            f"REVOKE INSERT, UPDATE, DELETE ON {q('django_migrations')} FROM {who}",
        ):
            cursor.execute(statement)

"""The worker's claim of a queued action in one statement: ``queued -> running`` with the conditional
UPDATE, and the action with its target, connection and environment read back in the same round trip; the
audit chain's head is locked in it too, once the UPDATE claimed the row, for the claim's audit event.

The ORM needs two (the UPDATE, then ``select_related(...).get()``) and compiles both each time; on the path
from commit to connector call (the dispatch latency, bench/launch_dispatch.py; the Airflow clear,
bench/airflow_clear.py) each round trip cost 1-2.5 ms while the web process and the worker share two
cores. Postgres runs it as an UPDATE ... RETURNING in a WITH clause joined to the catalog rows; SQLite (the
embedded demo) allows no UPDATE in a WITH clause and takes the ORM's two statements. Either way the
instances are built as the ORM builds them (``tests/test_launch_path_parts.py`` holds them equal).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F, Value
from django.db.models.functions import Coalesce

from controlplane.actions.models import ActionRun, ActionState
from controlplane.audit.services import audit_head_lock
from controlplane.catalog.models import Connection, Environment, Target
from controlplane.catalog.rowload import Statement, chain_parts, hydrate, link_target, select_list

_statements: dict[str, Statement] = {}


def _statement(connection: BaseDatabaseWrapper) -> Statement:
    statement = _statements.get(connection.alias)
    if statement is None:
        q = connection.ops.quote_name
        chain = ((ActionRun, "a"), (Target, "t"), (Connection, "c"), (Environment, "e"))
        sql = (
            f"WITH a AS (UPDATE {q(ActionRun._meta.db_table)} SET {q('state')} = %s,"
            f" {q('attempts')} = {q('attempts')} + 1, {q('heartbeat_at')} = %s, {q('lease_expires_at')} = %s,"
            f" {q('worker')} = %s, {q('not_before')} = NULL, {q('started_at')} = COALESCE({q('started_at')}, %s)"
            f" WHERE {q('id')} = %s AND {q('state')} = %s AND ({q('not_before')} IS NULL OR {q('not_before')} <= %s)"
            f" RETURNING *), {audit_head_lock(connection, once='a')}"
            f" SELECT {select_list(chain, connection)}, h.{q('seq')}, h.{q('hash')} FROM a"
            f" JOIN {q(Target._meta.db_table)} t ON t.{q('id')} = a.{q('target_id')}"
            f" JOIN {q(Connection._meta.db_table)} c ON c.{q('id')} = t.{q('connection_id')}"
            f" JOIN {q(Environment._meta.db_table)} e ON e.{q('id')} = c.{q('environment_id')}"
            " LEFT JOIN audit_head h ON true"
        )
        statement = _statements[connection.alias] = Statement(sql, chain_parts(chain, connection))
    return statement


class Claim(NamedTuple):
    """A claimed action (``target.connection.environment`` loaded), and the audit chain's head when the claim's
    statement locked it too (Postgres: ``audit_record(..., locked_head=...)`` then skips that round trip)."""

    action: ActionRun
    audit_head: tuple[int, str] | None = None


def action_claim_queued(
    action_id: Any, *, now: datetime, lease_until: datetime, worker: str, using: str = "default"
) -> Claim | None:
    """Claim the action if it is queued and due: running, one more attempt, the lease, this worker. None when
    there was nothing to claim (a duplicate delivery, a cancelled or not yet due action). Call it inside the
    claiming transaction, and record the claim's audit event in it."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return claim_by_orm(action_id, now=now, lease_until=lease_until, worker=worker, using=using)
    return claim_in_one_statement(action_id, now=now, lease_until=lease_until, worker=worker, using=using)


def claim_by_orm(action_id: Any, *, now: datetime, lease_until: datetime, worker: str, using: str) -> Claim | None:
    """``action_claim_queued`` in the ORM's two statements (any database)."""
    claimed = (
        ActionRun.objects.using(using)
        .filter(id=action_id, state=ActionState.QUEUED)
        .exclude(not_before__gt=now)
        .update(
            state=ActionState.RUNNING,
            attempts=F("attempts") + 1,
            heartbeat_at=now,
            lease_expires_at=lease_until,
            worker=worker,
            not_before=None,
            started_at=Coalesce(F("started_at"), Value(now)),
        )
    )
    if claimed != 1:
        return None
    return Claim(ActionRun.objects.using(using).select_related("target__connection__environment").get(id=action_id))


def claim_in_one_statement(
    action_id: Any, *, now: datetime, lease_until: datetime, worker: str, using: str
) -> Claim | None:
    """``action_claim_queued`` in one round trip (Postgres), the audit chain's head locked in it."""
    connection = connections[using]
    statement = _statement(connection)
    when = ActionRun._meta.get_field("heartbeat_at")
    at, until = when.get_db_prep_value(now, connection), when.get_db_prep_value(lease_until, connection)
    pk = ActionRun._meta.get_field("id").get_db_prep_value(action_id, connection)
    params = [ActionState.RUNNING.value, at, until, worker, at, pk, ActionState.QUEUED.value, at]
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    action, target, conn, environment = hydrate(row[:-2], statement.parts, connection)
    link_target(target, conn, environment)  # type: ignore[arg-type]
    ActionRun._meta.get_field("target").set_cached_value(action, target)
    seq, head_hash = row[-2:]
    return Claim(action, (int(seq), str(head_hash)) if seq is not None else None)  # type: ignore[arg-type]

"""An action with what its detail names (target, environment, requester) and the tail of its log, in one
statement on Postgres.

It is the read behind ``GET /api/v1/actions/<id>``, and above all behind every ``?wait`` answer, which is read
the moment the action ended: while the worker finishes, and Airflow's scheduler closes the run, on the same
two cores. There the ORM's two queries (the action joined to three tables, its SQL compiled again each time;
then the log tail) took about 5 ms (bench/airflow_clear.py). One statement built once per process: the log
tail comes as a JSON array from a subquery, the rows are turned into instances as the ORM does
(catalog/rowload). Postgres only: ``selectors.action_get_with_log`` reads through the ORM elsewhere (SQLite,
the embedded demo), and ``tests/test_api_read.py`` holds both equal.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from controlplane.actions.models import ActionLogLine, ActionRun
from controlplane.catalog.models import Environment, Target
from controlplane.catalog.rowload import Statement, chain_parts, hydrate, select_list
from controlplane.errors import NotFound

_statements: dict[str, Statement] = {}
_LINE_FIELDS = ("id", "at", "attempt", "level", "message")


def _statement(connection: BaseDatabaseWrapper) -> Statement:
    statement = _statements.get(connection.alias)
    if statement is None:
        q = connection.ops.quote_name
        user = get_user_model()
        user_pk = next(f for f in user._meta.concrete_fields if f.primary_key)
        chain = ((ActionRun, "a"), (Target, "t"), (Environment, "e"), (user, "u"))
        line_columns = {f.name: f.column for f in ActionLogLine._meta.concrete_fields}
        columns = ", ".join(f"l.{q(line_columns[name])}" for name in _LINE_FIELDS)
        fk = {f.name: q(f.column) for f in ActionRun._meta.concrete_fields}
        sql = (
            f"SELECT {select_list(chain, connection)},"
            f" (SELECT COALESCE(json_agg(json_build_array({columns}) ORDER BY l.{q('id')}), '[]')"
            f" FROM (SELECT * FROM {q(ActionLogLine._meta.db_table)} WHERE {q('action_id')} = a.{q('id')}"
            f" ORDER BY {q('id')} DESC LIMIT %s) l)"
            f" FROM {q(ActionRun._meta.db_table)} a"
            f" JOIN {q(Target._meta.db_table)} t ON t.{q('id')} = a.{fk['target']}"
            f" JOIN {q(Environment._meta.db_table)} e ON e.{q('id')} = a.{fk['environment']}"
            f" JOIN {q(user._meta.db_table)} u ON u.{q(user_pk.column)} = a.{fk['requested_by']}"
            f" WHERE a.{q('id')} = %s"
        )
        statement = _statements[connection.alias] = Statement(sql, chain_parts(chain, connection))
    return statement


def action_with_log(
    action_id: uuid.UUID, *, lines: int, using: str = "default"
) -> tuple[ActionRun, list[ActionLogLine]]:
    """The action with ``target``, ``environment`` and ``requested_by`` loaded, and its last ``lines`` log
    lines, oldest first, in one statement (Postgres). NotFound for an unknown id."""
    connection = connections[using]
    statement = _statement(connection)
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, [lines, action_id])
        row = cursor.fetchone()
    if row is None:
        raise NotFound(f"no action {action_id}")
    action, target, environment, user = hydrate(row[:-1], statement.parts, connection)
    ActionRun._meta.get_field("target").set_cached_value(action, target)
    ActionRun._meta.get_field("environment").set_cached_value(action, environment)
    ActionRun._meta.get_field("requested_by").set_cached_value(action, user)
    tail = json.loads(row[-1]) if isinstance(row[-1], str) else row[-1]
    log = []
    for line_id, at, attempt, level, message in tail:
        line = ActionLogLine(
            id=line_id,
            action_id=action.pk,
            at=datetime.fromisoformat(at),
            attempt=attempt,
            level=level,
            message=message,
        )
        line._state.adding, line._state.db = False, connection.alias
        log.append(line)
    return action, log  # type: ignore[return-value]

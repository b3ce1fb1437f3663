"""The SQL the ORM would send for an INSERT or an UPDATE, to embed in a statement of one's own.

The action path folds the audit chain head's lock into the statement that makes the change it records
(``audit.services.audit_head_lock``): the change goes in a WITH clause, the head's lock after it. These
helpers take the change's SQL and parameters from the ORM's own compilers, so the values are prepared
exactly as ``save()``, ``bulk_create()`` and ``update()`` prepare them (``pre_save``: ``auto_now_add``,
defaults; each field's ``get_db_prep_save``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import sql
from django.db.models.fields import AutoFieldMixin


def insert_sql(objs: Sequence[models.Model], connection: BaseDatabaseWrapper) -> tuple[str, list[Any]]:
    """``INSERT INTO ... VALUES (...), ...`` of ``objs`` (one model; every concrete field but an auto primary
    key), as ``bulk_create`` would send it on a backend that inserts many rows in one statement."""
    model = type(objs[0])
    fields = [f for f in model._meta.concrete_fields if not isinstance(f, AutoFieldMixin)]
    query = sql.InsertQuery(model)
    query.insert_values(fields, list(objs))
    [(statement, params)] = query.get_compiler(connection=connection).as_sql()
    return statement, list(params)


def update_sql(
    queryset: models.QuerySet[Any], change: dict[str, Any], connection: BaseDatabaseWrapper
) -> tuple[str, list[Any]]:
    """``UPDATE ... SET ... WHERE ...`` as ``queryset.update(**change)`` would send it."""
    query = cast(sql.UpdateQuery, queryset.query.chain(sql.UpdateQuery))
    query.add_update_values(change)
    statement, params = query.get_compiler(connection=connection).as_sql()
    return statement, list(params)

"""Forget cached targets (controlplane.configcache) when a target, its connection or its environment
changes: a locator, a connection's config or secret references, an environment's protected flag."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from controlplane.catalog.models import Connection, Environment, Target
from controlplane.configcache import config_changed

# Health checks write these every few minutes; they change nothing a cached target stands for.
_OBSERVATIONS = {"health_ok", "health_summary", "health_checked_at"}


def _changed(sender: Any, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and set(update_fields) <= _OBSERVATIONS:
        return
    config_changed()


def connect() -> None:
    for model in (Environment, Connection, Target):
        post_save.connect(_changed, sender=model, dispatch_uid=f"catalog-config-save-{model.__name__}")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"catalog-config-delete-{model.__name__}")

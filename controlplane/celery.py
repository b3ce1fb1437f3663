"""The Celery app: configuration from Django settings (``CELERY_*``), tasks discovered in the apps."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("controlplane")


def _settings() -> dict[str, object]:
    """The ``CELERY_*`` Django settings under Celery's own lowercase names, read once: a plain dict rather
    than ``config_from_object("django.conf:settings", namespace="CELERY")``, with which every configuration
    lookup (seven per task published) tries several key spellings on Django's settings object, each miss
    an exception: a fifth of the CPU of a publish. Each setting is also kept under its full name: Celery's
    Django fixup reads ``CELERY_DB_REUSE_MAX`` that way (without it every task would reconnect)."""
    from django.conf import settings

    prefix = "CELERY_"
    names = [name for name in dir(settings) if name.startswith(prefix)]
    return {key: getattr(settings, name) for name in names for key in (name[len(prefix) :].lower(), name)}


app.add_defaults(_settings)  # called on the first read of app.conf, once Django's settings are importable
app.autodiscover_tasks()

"""Django's PostgreSQL backend, with a health check that skips the ping for a connection in recent use.

``CONN_HEALTH_CHECKS`` makes Django send a ping before the first query of every request (and every Celery
task) on a persistent connection: a round trip on every request. What it guards against is a connection
that died while it sat idle: Postgres restarted or failed over, an idle timeout, a firewall dropping the
socket. A connection that served a request without error a moment ago is not in that state, so here the
ping is sent only when the connection has not been used successfully for ``HEALTH_CHECK_AFTER_IDLE``
seconds. A connection that breaks inside that window fails one request (nothing is written: the transaction
never commits) and is closed and reopened by Django's usual error handling, as without health checks.

Selected by ``ENGINE`` (``controlplane.env.database_from_url``). It overrides two methods of Django's
``BaseDatabaseWrapper`` that are not public API (``close_if_health_check_failed``,
``close_if_unusable_or_obsolete``) and reads ``health_check_enabled``/``health_check_done``: Django is pinned
to one minor version in pyproject.toml, and tests/test_launch_path_parts.py fails if those move.
"""

from __future__ import annotations

import time

from django.db.backends.postgresql import base

HEALTH_CHECK_AFTER_IDLE = 1.0  # seconds


class DatabaseWrapper(base.DatabaseWrapper):
    health_check_enabled: bool  # set by Django's connect(); not in django-stubs
    health_check_done: bool
    # When this connection last ended a request or task in which it was used without errors (monotonic).
    _used_ok_at: float | None = None

    def close_if_unusable_or_obsolete(self) -> None:
        """Called by Django at the start and end of every request: remember a use that went well."""
        if self.connection is not None and self.health_check_done and not self.errors_occurred:
            self._used_ok_at = time.monotonic()
        super().close_if_unusable_or_obsolete()

    def close_if_health_check_failed(self) -> None:
        """Django's health check, skipped for a connection used successfully within the idle window."""
        used_ok_at = self._used_ok_at
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and used_ok_at is not None
            and time.monotonic() - used_ok_at < HEALTH_CHECK_AFTER_IDLE
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def connect(self) -> None:
        super().connect()
        self._used_ok_at = None  # a new connection gets no credit from the one it replaces

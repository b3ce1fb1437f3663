"""Periodic full verification of the audit chain (Celery beat)."""

from __future__ import annotations

import logging

from celery import shared_task

from controlplane.audit.services import audit_verify_full

log = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def verify_audit_chain(lock_token: str | None = None) -> None:
    """Beat's periodic walk (no token), or one a page queued (``lock_token``: its lock, taken by the queuer)."""
    verdict = audit_verify_full(lock_token=lock_token)
    if verdict is None:
        log.info("audit chain: a full verification is already queued or running; this one is skipped")
    elif not verdict.ok:
        log.error("%s", verdict.describe())

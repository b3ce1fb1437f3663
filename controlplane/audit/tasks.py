"""Periodic full verification of the audit chain (Celery beat)."""

from __future__ import annotations

import logging

from celery import shared_task

from controlplane.audit.services import audit_verify_full

log = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def verify_audit_chain() -> None:
    verdict = audit_verify_full()
    if not verdict.ok:
        log.error("%s", verdict.describe())

"""Celery tasks of the engine: small wrappers over services, safe to run twice."""

from dataclasses import asdict
from typing import Any

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from prioritization import services, sla


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def rescore_leads() -> dict[str, Any]:
    """Refresh stored keys after policy changes (only rows whose key changes are rewritten)."""
    return asdict(services.rescore_leads())


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def wake_due_leads() -> dict[str, int]:
    """Return due reschedules and expired leases to the queue in every campaign."""
    return {"woken": services.wake_due_leads()}


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def rollup_sla() -> dict[str, Any]:
    """Recompute the daily SLA rollups of settled days (see prioritization.sla.rollup_sla)."""
    return asdict(sla.rollup_sla(now=timezone.now()))

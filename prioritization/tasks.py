"""Celery tasks of the engine: small wrappers over services, safe to run twice."""

import datetime as dt
from dataclasses import asdict
from typing import Any

from celery import Task, shared_task
from django.db import OperationalError
from django.utils import timezone

from prioritization import alerts, services, sla, training
from prioritization.simulation import runs as simulation_runs


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def rescore_leads() -> dict[str, Any]:
    """Refresh stored keys after policy changes (only rows whose key changes are rewritten)."""
    return asdict(services.rescore_leads())


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def wake_due_leads() -> dict[str, int]:
    """Return due reschedules and expired leases to the queue in every campaign."""
    return {"woken": services.wake_due_leads()}


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def train_models(
    trigger: str = "schedule", user_id: int | None = None, requested_at: str | None = None
) -> dict[str, Any]:
    """Train and store the learned models; point learned and blended policies at them.
    ``requested_at`` (ISO 8601): when "train now" was pressed; a run since then covers it."""
    return asdict(
        training.train_models(
            trigger=trigger,
            user_id=user_id,
            requested_at=dt.datetime.fromisoformat(requested_at) if requested_at else None,
        )
    )


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def rollup_sla() -> dict[str, Any]:
    """Recompute the daily SLA rollups of settled days (see prioritization.sla.rollup_sla)."""
    return asdict(sla.rollup_sla(now=timezone.now()))


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def evaluate_alerts() -> dict[str, Any]:
    """Open, refresh and close alerts (see prioritization.alerts.evaluate_alerts)."""
    return asdict(alerts.evaluate_alerts())


@shared_task(bind=True, autoretry_for=(OperationalError,), max_retries=alerts.WEBHOOK_RETRIES)
def deliver_alert_webhook(self: Task[Any, Any], alert_id: int, event: alerts.Event) -> dict[str, Any]:
    """POST an alert's opening or clearing to its customer's webhook; a network error, a
    timeout, 408, 429 or 5xx is retried with a growing delay, then recorded as failed."""
    try:
        return {
            "alert_id": alert_id,
            "event": event,
            "state": alerts.deliver_alert_webhook(alert_id=alert_id, event=event),
        }
    except alerts.WebhookTransientError as error:
        if self.request.retries >= alerts.WEBHOOK_RETRIES:
            state = alerts.record_webhook_failure(alert_id=alert_id, event=event, error=str(error))
            return {"alert_id": alert_id, "event": event, "state": state}
        raise self.retry(exc=error, countdown=alerts.webhook_retry_delay(self.request.retries)) from error


@shared_task(acks_late=True)
def run_simulation(run_id: int) -> dict[str, Any]:
    """Run a policy comparison asked for in the admin (minutes; a run is started once: a
    second delivery of the message finds it no longer queued)."""
    return {"run_id": run_id, "status": simulation_runs.execute_simulation_run(run_id=run_id)}


@shared_task
def sweep_simulation_runs() -> dict[str, int]:
    """Fail comparisons running past their time limit; send again those no worker took."""
    return simulation_runs.sweep_simulation_runs()

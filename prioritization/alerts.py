"""Alerts: a customer's projected SLA attainment below its target, or a campaign that
contractors ask for with an empty queue.

The beat task ``prioritization.tasks.evaluate_alerts`` calls :func:`evaluate_alerts` every
minute. An alert opens the first time a condition is seen and stays open, one row per
(kind, customer, campaign) — a database constraint, so two evaluations cannot open it
twice — until an evaluation no longer sees the condition; then it closes. Opening and
closing are logged, shown on every admin page while open (``templates/admin/base_site.html``)
and POSTed as JSON to the customer's ``alert_webhook_url`` by a Celery task enqueued on
commit; webhook failures are retried with backoff and never affect the evaluation. Each
evaluation also keeps every customer's SLA figures of today (:class:`SlaSnapshot`), which
/metrics exposes without recomputing them.

Definitions:

- SLA counts are those of :mod:`prioritization.sla` (the dashboard's and the stats API's):
  today's live leads in SLA, missed and pending, and the leads at risk (never called,
  deadline within the policy's ``sla_protect_minutes``).
- Projected attainment = (in SLA + pending − at risk) / (in SLA + missed + pending): every
  at-risk lead is counted as a miss and every other pending lead as served in time.
  Pessimistic for the leads close to their deadline (the engine serves those first),
  optimistic for the rest (it assumes the contractors keep up): an early warning, not a
  forecast. An alert opens while it is below the policy's ``sla_target``.
- Empty queue: contractors asked for the campaign (in any tuple, whatever the answer) in
  the last ``DEMAND_WINDOW_SECONDS`` and it has no lead that a claim could take now
  (ready, due, or with an expired lease). It clears when a lead is there again or when
  nobody has asked for ``DEMAND_WINDOW_SECONDS``.
"""

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import requests
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import KombuError
from requests.utils import requote_uri

from leads.models import Customer
from prioritization import sla
from prioritization.models import Alert, AlertKind, SlaSnapshot, WebhookState
from prioritization.sla import SlaCounts, SlaReport

logger = logging.getLogger(__name__)

# "Contractors ask for it": at least one next-lead request named the campaign this recently.
DEMAND_WINDOW_SECONDS = 300
# pg_advisory_xact_lock key of the evaluation ("LRAL"): one evaluation at a time.
ALERT_LOCK_KEY = 0x4C52414C
# Webhook deliveries: attempts after the first, and the delay before each (seconds).
WEBHOOK_RETRIES = 5
WEBHOOK_FIRST_RETRY_SECONDS = 30
WEBHOOK_MAX_RETRY_SECONDS = 600

Event = Literal["opened", "resolved"]
ConditionKey = tuple[str, int, int | None]  # (kind, customer_id, campaign_id)


# --- Figures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlaOutlook:
    """One customer's SLA figures of today (from :func:`prioritization.sla.sla_report`, the
    dashboard's own numbers) and the projection built on them."""

    customer_id: int
    customer: str
    target: float
    at_risk_minutes: float
    today: SlaCounts
    # Never-called live leads of today whose deadline is within at_risk_minutes (capped at
    # pending: a lead's stored deadline predates a change of the SLA window).
    at_risk: int
    contractors_active: int = 0

    @classmethod
    def from_snapshot(cls, snapshot: SlaSnapshot, customer: str) -> "SlaOutlook":
        counts = SlaCounts(
            snapshot.in_sla + snapshot.missed + snapshot.pending,
            snapshot.in_sla,
            snapshot.missed,
            snapshot.pending,
        )
        return cls(
            customer_id=snapshot.customer_id,
            customer=customer,
            target=snapshot.target,
            at_risk_minutes=0.0,  # not kept: the count is
            today=counts,
            at_risk=snapshot.at_risk,
            contractors_active=snapshot.contractors_active,
        )

    def snapshot(self, computed_at: dt.datetime) -> SlaSnapshot:
        return SlaSnapshot(
            customer_id=self.customer_id,
            computed_at=computed_at,
            target=self.target,
            in_sla=self.today.in_sla,
            missed=self.today.missed,
            pending=self.today.pending,
            at_risk=self.at_risk,
            contractors_active=self.contractors_active,
        )

    @property
    def attainment(self) -> float | None:
        return self.today.attainment

    @property
    def projected(self) -> float | None:
        """Share served in SLA if every at-risk lead misses and every other pending one
        makes it; ``None`` without live leads today."""
        total = self.today.in_sla + self.today.missed + self.today.pending
        return (self.today.in_sla + self.today.pending - self.at_risk) / total if total else None

    @property
    def below_target(self) -> bool:
        projected = self.projected
        return projected is not None and projected < self.target

    def as_detail(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "attainment": self.attainment,
            "projected_attainment": self.projected,
            "at_risk_minutes": self.at_risk_minutes,
            "live_leads": self.today.in_sla + self.today.missed + self.today.pending,
            "in_sla": self.today.in_sla,
            "missed": self.today.missed,
            "at_risk": self.at_risk,
            "pending": self.today.pending - self.at_risk,
        }


def sla_outlooks(report: SlaReport) -> list[SlaOutlook]:
    """Each customer's outlook for today, from an SLA report that covers today."""
    return [
        SlaOutlook(
            customer_id=c.customer_id,
            customer=c.name,
            target=c.sla_target,
            at_risk_minutes=c.at_risk_minutes,
            today=c.figures.sla_today,
            # Today's leads only: yesterday's last leads, at risk just after midnight, would
            # otherwise count as misses of today's (an alert every night).
            at_risk=min(c.figures.at_risk_today, c.figures.sla_today.pending),
            contractors_active=c.figures.contractors_active,
        )
        for c in report.customers
    ]


def today_report(*, now: dt.datetime) -> SlaReport:
    """The SLA report of today for every customer (alerts and /metrics read it)."""
    today = sla.utc_day(now)
    return sla.sla_report(now=now, start=today, end=today)


@dataclass(frozen=True)
class EmptyQueue:
    campaign_id: int
    campaign: str
    customer_id: int
    customer: str
    last_asked_at: dt.datetime
    last_empty_at: dt.datetime | None


# Each NOT EXISTS is one probe of a partial claim index (lead_claim_ready, lead_waiting_due,
# lead_held_lease): the same three ways a claim finds a lead.
_EMPTY_QUEUES_SQL = """
SELECT d.campaign_id, c.name, c.customer_id, cu.name, d.last_asked_at, d.last_empty_at
FROM prioritization_campaigndemand d
JOIN leads_campaign c ON c.id = d.campaign_id
JOIN leads_customer cu ON cu.id = c.customer_id
WHERE d.last_asked_at >= %(since)s AND c.active
  AND NOT EXISTS (SELECT 1 FROM leads_lead l WHERE l.campaign_id = d.campaign_id AND l.status = 'ready')
  AND NOT EXISTS (
      SELECT 1 FROM leads_lead l
      WHERE l.campaign_id = d.campaign_id AND l.status = 'waiting' AND l.due_at <= %(now)s
  )
  AND NOT EXISTS (
      SELECT 1 FROM leads_lead l
      WHERE l.campaign_id = d.campaign_id AND l.status = 'held' AND l.lease_expires_at <= %(now)s
  )
ORDER BY d.campaign_id
"""


def empty_queues(*, now: dt.datetime) -> list[EmptyQueue]:
    """Active campaigns asked for in the last ``DEMAND_WINDOW_SECONDS`` with nothing to call now."""
    since = now - dt.timedelta(seconds=DEMAND_WINDOW_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(_EMPTY_QUEUES_SQL, {"since": since, "now": now})
        return [EmptyQueue(*row) for row in cursor.fetchall()]


# --- Evaluation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    kind: str
    customer_id: int
    campaign_id: int | None
    message: str
    detail: dict[str, Any]

    @property
    def key(self) -> ConditionKey:
        return (self.kind, self.customer_id, self.campaign_id)


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


def current_conditions(*, now: dt.datetime, outlooks: Sequence[SlaOutlook]) -> list[Condition]:
    """Every alert condition that holds at ``now``, given today's SLA outlooks (reads only)."""
    conditions = [
        Condition(
            kind=AlertKind.SLA_AT_RISK,
            customer_id=f.customer_id,
            campaign_id=None,
            message=(
                f"{f.customer}: projected SLA attainment today {_percent(f.projected)} is below the "
                f"target {_percent(f.target)} ({f.today.in_sla} in SLA, {f.today.missed} missed, "
                f"{f.at_risk} at risk, {f.today.pending - f.at_risk} on track)"
            ),
            detail=f.as_detail(),
        )
        for f in outlooks
        if f.below_target
    ]
    conditions += [
        Condition(
            kind=AlertKind.EMPTY_QUEUE,
            customer_id=q.customer_id,
            campaign_id=q.campaign_id,
            message=(
                f"{q.customer} / {q.campaign}: contractors ask for this campaign "
                f"(last at {q.last_asked_at.astimezone(dt.UTC):%H:%M} UTC) and it has no lead to call"
            ),
            detail={
                "last_asked_at": q.last_asked_at.isoformat(),
                "last_empty_at": q.last_empty_at.isoformat() if q.last_empty_at else None,
            },
        )
        for q in empty_queues(now=now)
    ]
    return conditions


@dataclass
class EvaluationSummary:
    opened: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    skipped: bool = False  # another evaluation was running


def evaluate_alerts(*, now: dt.datetime | None = None) -> EvaluationSummary:
    """Open alerts for new conditions, refresh the figures of those still true, close the
    others; webhooks are enqueued when the transaction commits.

    The conditions are read first; the alert rows are then changed in one short
    transaction under an advisory lock, so a second evaluation running at the same time
    returns at once (``skipped``) instead of opening duplicates, as does one whose reading
    a later evaluation overtook (:func:`_evaluated_since`).
    """
    now = now or timezone.now()
    outlooks = sla_outlooks(today_report(now=now))
    conditions = {c.key: c for c in current_conditions(now=now, outlooks=outlooks)}
    summary = EvaluationSummary()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [ALERT_LOCK_KEY])
        if not cursor.fetchone()[0] or _evaluated_since(now):
            summary.skipped = True
            return summary
        _store_snapshots(outlooks, now)
        open_alerts = {
            (a.kind, a.customer_id, a.campaign_id): a
            for a in Alert.objects.select_for_update().filter(closed_at__isnull=True)
        }
        customer_ids = {key[1] for key in conditions.keys() | open_alerts.keys()}
        webhooks = dict(
            Customer.objects.filter(pk__in=customer_ids)
            .exclude(alert_webhook_url="")
            .values_list("pk", "alert_webhook_url")
        )
        for key, condition in conditions.items():
            alert = open_alerts.get(key)
            if alert is not None:
                Alert.objects.filter(pk=alert.pk).update(
                    checked_at=now, message=condition.message[:500], detail=condition.detail
                )
                summary.kept.append(alert.pk)
                continue
            alert = Alert.objects.create(
                kind=condition.kind,
                customer_id=condition.customer_id,
                campaign_id=condition.campaign_id,
                opened_at=now,
                checked_at=now,
                message=condition.message[:500],
                detail=condition.detail,
                opened_webhook=WebhookState.PENDING if key[1] in webhooks else WebhookState.NONE,
            )
            summary.opened.append(alert.pk)
            logger.warning("Alert %s opened: %s", alert.pk, alert.message)
            if key[1] in webhooks:
                _enqueue_on_commit(alert.pk, "opened")
        for key, alert in open_alerts.items():
            if key in conditions:
                continue
            notify = key[1] in webhooks
            Alert.objects.filter(pk=alert.pk).update(
                closed_at=now, resolved_webhook=WebhookState.PENDING if notify else WebhookState.NONE
            )
            summary.closed.append(alert.pk)
            logger.info("Alert %s cleared: %s", alert.pk, alert.message)
            if notify:
                _enqueue_on_commit(alert.pk, "resolved")
    return summary


def _evaluated_since(now: dt.datetime) -> bool:
    """Whether an evaluation that read its conditions after ``now`` has already applied them
    (it ran while this one was reading): what this one read is older, and applying it would
    reopen an alert that one just closed, or put older figures back."""
    return (
        SlaSnapshot.objects.filter(computed_at__gt=now).exists()
        or Alert.objects.filter(Q(checked_at__gt=now) | Q(closed_at__gt=now)).exists()
    )


def _store_snapshots(outlooks: Sequence[SlaOutlook], now: dt.datetime) -> None:
    """Keep today's figures for /metrics: one upsert of every customer's row."""
    SlaSnapshot.objects.bulk_create(
        [outlook.snapshot(now) for outlook in outlooks],
        update_conflicts=True,
        unique_fields=["customer"],
        update_fields=[
            "computed_at",
            "target",
            "in_sla",
            "missed",
            "pending",
            "at_risk",
            "contractors_active",
        ],
    )


def sla_snapshots() -> list[tuple[SlaOutlook, dt.datetime]]:
    """Each customer's outlook as the last evaluation stored it, and when (for /metrics)."""
    rows = SlaSnapshot.objects.select_related("customer").order_by("customer_id")
    return [(SlaOutlook.from_snapshot(row, row.customer.name), row.computed_at) for row in rows]


def _enqueue_on_commit(alert_id: int, event: Event) -> None:
    transaction.on_commit(lambda: enqueue_webhook(alert_id=alert_id, event=event))


def enqueue_webhook(*, alert_id: int, event: Event) -> None:
    """Hand the delivery to a Celery worker. A broker that is down must not fail the
    evaluation (it has committed): the delivery is marked failed, and the alert stays
    visible in the admin and the logs."""
    from prioritization import tasks  # tasks import this module

    try:
        tasks.deliver_alert_webhook.delay(alert_id, event)
    except (KombuError, OSError) as error:
        logger.exception("Could not enqueue the %s webhook of alert %s.", event, alert_id)
        record_webhook_failure(alert_id=alert_id, event=event, error=f"Could not enqueue: {error}")


# --- Webhooks ------------------------------------------------------------------------------


class WebhookTransientError(Exception):
    """The receiver may accept a later attempt (network error, timeout, 408, 429, 5xx)."""


USER_AGENT = "leadrank-alerts/1"


def webhook_session() -> requests.Session:
    """The HTTP session webhooks are sent with (tests mount a fake adapter on it)."""
    return requests.Session()


def webhook_payload(alert: Alert, event: Event, *, sent_at: dt.datetime) -> dict[str, Any]:
    """The JSON body POSTed to the customer's webhook."""
    return {
        "event": f"alert.{event}",
        "sent_at": sent_at.isoformat(),
        "alert": {
            "id": alert.pk,
            "kind": alert.kind,
            "customer_id": alert.customer_id,
            "customer": alert.customer.name,
            "campaign_id": alert.campaign_id,
            "campaign": alert.campaign.name if alert.campaign is not None else None,
            "message": alert.message,
            "opened_at": alert.opened_at.isoformat(),
            "closed_at": alert.closed_at.isoformat() if alert.closed_at else None,
            "detail": alert.detail,
        },
    }


def _state_field(event: Event) -> str:
    return "opened_webhook" if event == "opened" else "resolved_webhook"


def deliver_alert_webhook(*, alert_id: int, event: Event, now: dt.datetime | None = None) -> str:
    """POST the alert's ``event`` to its customer's webhook, once; returns the new state.

    No transaction is open during the request (the row is read, then updated with a
    conditional UPDATE), so a slow receiver holds no lock. Delivered twice only if a
    worker dies between the POST and the UPDATE; receivers can drop repeats by
    (``alert.id``, ``event``). Raises :class:`WebhookTransientError` when a later
    attempt may succeed; other failures are recorded as ``failed`` at once.
    """
    now = now or timezone.now()
    state_field = _state_field(event)
    alert = Alert.objects.select_related("customer", "campaign").filter(pk=alert_id).first()
    if alert is None or getattr(alert, state_field) != WebhookState.PENDING:
        return "skipped"
    url = alert.customer.alert_webhook_url
    if not url:
        Alert.objects.filter(pk=alert_id).update(**{state_field: WebhookState.NONE})
        return WebhookState.NONE
    try:
        response = webhook_session().post(
            url,
            json=webhook_payload(alert, event, sent_at=now),
            headers={"User-Agent": USER_AGENT},
            timeout=settings.LEADRANK_ALERT_WEBHOOK_TIMEOUT_SECONDS,
            allow_redirects=False,
        )
    # Network failures, a connection cut while the answer was read among them.
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
        raise WebhookTransientError(without_url_secrets(f"{type(error).__name__}: {error}", url)) from error
    except requests.RequestException as error:  # invalid URL and the like: retrying cannot help
        return record_webhook_failure(
            alert_id=alert_id, event=event, error=without_url_secrets(f"{type(error).__name__}: {error}", url)
        )
    if 200 <= response.status_code < 300:
        Alert.objects.filter(pk=alert_id, **{state_field: WebhookState.PENDING}).update(
            **{state_field: WebhookState.DELIVERED}
        )
        return WebhookState.DELIVERED
    if response.status_code in (408, 429) or response.status_code >= 500:
        raise WebhookTransientError(f"HTTP {response.status_code} from {url_origin(url)}")
    return record_webhook_failure(
        alert_id=alert_id, event=event, error=f"HTTP {response.status_code} from {url_origin(url)}"
    )


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of a webhook URL: its path, query and credentials are often
    the receiver's secret (``https://hooks.example/T0/B0/secret``), and errors are kept on
    the alert, shown to whoever may view alerts, and logged."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.scheme else "the webhook URL"


def without_url_secrets(text: str, url: str) -> str:
    """``text`` (an error message that may quote the URL or its parts) without the URL's
    path, query and credentials."""
    parts = urlsplit(url)
    for form in (url, requote_uri(url)):
        text = text.replace(form, f"{url_origin(url)}/…")
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    credentials = parts.netloc.rpartition("@")[0]
    for secret in (target, parts.path, parts.query, credentials):
        # As written, and as requests quotes it in its messages ("{" as "%7B").
        for form in (secret, requote_uri(secret), unquote(secret)):
            if len(form) > 1:  # "/" alone is no secret, and would mangle the rest
                text = text.replace(form, "…")
    return text


def record_webhook_failure(*, alert_id: int, event: Event, error: str) -> str:
    """Give up on a delivery: the state says failed and the error is kept and logged."""
    logger.warning("Webhook %s of alert %s failed: %s", event, alert_id, error)
    Alert.objects.filter(pk=alert_id).update(
        **{_state_field(event): WebhookState.FAILED, "webhook_error": error[:500]}
    )
    return WebhookState.FAILED


def webhook_retry_delay(retries: int) -> int:
    """Seconds before retry number ``retries + 1``: 30 s, 60 s, 120 s, … capped at 10 min."""
    return int(min(WEBHOOK_MAX_RETRY_SECONDS, WEBHOOK_FIRST_RETRY_SECONDS * 2**retries))


# --- Reading -------------------------------------------------------------------------------


def open_alerts(*, limit: int = 20) -> Sequence[Alert]:
    """Open alerts, newest first (the admin banner)."""
    return list(Alert.objects.filter(closed_at__isnull=True).select_related("customer", "campaign")[:limit])


def count_open_alerts() -> int:
    return Alert.objects.filter(closed_at__isnull=True).count()

"""Prometheus metrics: the ``/metrics`` endpoint, counters recorded where events happen, and
gauges computed from the database when Prometheus scrapes.

Two kinds of figures, for two reasons:

- Events on the request path (next-lead answers and their latency) and in workers (import
  rows) are prometheus_client counters and histograms: an in-memory add of about a
  microsecond, no query. Production runs several web server workers and Celery workers, so
  with ``PROMETHEUS_MULTIPROC_DIR`` set (``make run`` sets it) each process writes its
  values to its own memory-mapped file in that folder and ``/metrics`` sums the files of
  every process on the machine, dead ones included (counters never go backwards when a
  worker is recycled). The folder must be emptied before the processes start (``make run``
  does); without it each process counts alone, which is right only for one process.
- Figures about the state of the data are read from PostgreSQL at scrape time by
  :class:`DatabaseCollector`, the same for every process and machine: queue depth (one
  aggregate over the partial queue indexes), alerts open, and the leases expired (a count
  of the ``lease_expired`` lead events over their own partial index: every expiry,
  whichever process, claim or beat task, found it). Today's SLA figures come from the rows
  the alert evaluation writes every minute (:class:`~prioritization.models.SlaSnapshot`):
  computing them costs about a second at a million leads, too much for every scrape.

Nothing here runs a query on the next-lead path except :mod:`prioritization.demand`'s
write, at most once per 30 s per campaign and process.
"""

import datetime as dt
import functools
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from leads.models import Customer
from prioritization import alerts, demand
from prioritization.models import Alert, AlertKind

logger = logging.getLogger(__name__)

# --- Counters and histograms ---------------------------------------------------------------

# Seconds; the goal is a p99 under 50 ms, so the buckets are fine below 100 ms.
LATENCY_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
NEXT_LEAD_RESULTS = ("lead", "empty", "refused", "error")

NEXT_LEAD_SECONDS = Histogram(
    "leadrank_next_lead_seconds",
    "Time to answer a next-lead request inside Django's view (authentication, decision, JSON "
    "rendering), by result: lead, empty (204), refused (4xx), error (5xx).",
    ["result"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
CLAIMS = Counter(
    "leadrank_claims",
    "Next-lead answers that handed out a lead (a retried request answered with the lead the "
    "contractor already holds included).",
)
EMPTY_ANSWERS = Counter("leadrank_next_lead_empty", "Next-lead answers with nothing to call (HTTP 204).")
IMPORT_SOURCES = ("api", "file")
IMPORT_RESULTS = ("created", "updated", "rejected")
IMPORT_ROWS = Counter(
    "leadrank_import_rows",
    "Lead rows received, by way in (api: POST /api/v1/leads/; file: admin and command-line "
    "imports) and result.",
    ["source", "result"],
)

# Children bound once: the request path does a dict lookup, not a labels() call, and every
# series exists (at 0) from the start, so rate() sees the first event.
_LATENCY = {result: NEXT_LEAD_SECONDS.labels(result) for result in NEXT_LEAD_RESULTS}
_IMPORT_ROWS = {
    (source, result): IMPORT_ROWS.labels(source, result)
    for source in IMPORT_SOURCES
    for result in IMPORT_RESULTS
}


def _result_of(status: int) -> str:
    if status == 200:
        return "lead"
    if status == 204:
        return "empty"
    return "refused" if status < 500 else "error"


def record_next_lead(*, seconds: float, status: int, campaign_ids: Sequence[int] = (), at: float) -> None:
    """Count one next-lead answer with HTTP ``status`` that took ``seconds``; ``campaign_ids``
    (of a valid request) feed the empty-queue alert's demand. ``at``: seconds since 1970."""
    result = _result_of(status)
    _LATENCY[result].observe(seconds)
    if result == "lead":
        CLAIMS.inc()
    elif result == "empty":
        EMPTY_ANSWERS.inc()
    else:
        return
    if campaign_ids:
        demand.recorder.record(campaign_ids, empty=result == "empty", at=at)


def _campaign_ids(view: Any) -> list[int]:
    """The campaign ids of the request a view has answered (already validated: 200/204)."""
    data = getattr(getattr(view, "request", None), "data", None)
    raw = data.get("campaign_ids") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        return []
    try:
        return [int(value) for value in raw]
    except (TypeError, ValueError):
        return []


View = TypeVar("View", bound=type)


def instrument_next_lead(view_class: View) -> View:
    """Class decorator of the next-lead view: times ``dispatch`` (including rendering) and
    records the answer with :func:`record_next_lead`."""
    dispatch: Callable[..., Any] = view_class.dispatch  # type: ignore[attr-defined]

    @functools.wraps(dispatch)
    def timed_dispatch(self: Any, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        status = 500
        try:
            response = dispatch(self, request, *args, **kwargs)
            render = getattr(response, "render", None)
            if render is not None and not getattr(response, "is_rendered", True):
                render()  # measured here; Django would render it next anyway
            status = response.status_code
            return response
        finally:
            record_next_lead(
                seconds=time.perf_counter() - started,
                status=status,
                campaign_ids=_campaign_ids(self) if status in (200, 204) else (),
                at=time.time(),
            )

    view_class.dispatch = timed_dispatch  # type: ignore[attr-defined]
    return view_class


def record_import_rows(*, source: str, created: int = 0, updated: int = 0, rejected: int = 0) -> None:
    """Count lead rows received through ``source`` (``api`` or ``file``) by result."""
    for result, rows in (("created", created), ("updated", updated), ("rejected", rejected)):
        if rows:
            _IMPORT_ROWS[(source, result)].inc(rows)


def record_import_statuses(*, source: str, statuses: Iterable[str]) -> None:
    """Count rows from their per-row statuses (``created``, ``updated``, ``rejected``)."""
    counts = dict.fromkeys(IMPORT_RESULTS, 0)
    for status in statuses:
        counts[status] += 1
    record_import_rows(source=source, **counts)


# --- Gauges read from the database at scrape time -----------------------------------------

_QUEUE_STATES = ("live_due", "live_later", "stale_due", "stale_later", "held")
_LEASES_EXPIRED_SQL = "SELECT count(*) FROM leads_leadevent WHERE kind = 'lease_expired'"


class DatabaseCollector(Collector):
    """Figures read from PostgreSQL when Prometheus scrapes: a handful of indexed queries
    (queue depth, the SLA snapshots, the expiries' partial index, the open alerts' index).

    A database that does not answer gives ``leadrank_metrics_database_up 0`` and the
    process metrics, not an error page.
    """

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration: that would query the database

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        up = GaugeMetricFamily("leadrank_metrics_database_up", "1 when the database figures below were read.")
        try:
            families = list(database_families(now=timezone.now()))
        except DatabaseError:
            logger.warning("Metrics: could not read the database figures.", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield from families
        yield up
        seconds = GaugeMetricFamily(
            "leadrank_metrics_database_seconds", "Time spent reading the database figures of this scrape."
        )
        seconds.add_metric([], time.perf_counter() - started)
        yield seconds


# Open leads per customer and queue state (prioritization.sla.QueueDepth's states), one
# statement whose parts each walk a partial index: lead_claim_ready (an index-only count by
# campaign and type), lead_waiting_due and lead_held_lease.
_QUEUE_DEPTH_SQL = """
SELECT c.customer_id, q.state, sum(q.n)::bigint
FROM (
    SELECT campaign_id, lead_type || '_due' AS state, count(*) AS n
    FROM leads_lead WHERE status = 'ready' GROUP BY 1, 2
    UNION ALL
    SELECT campaign_id, lead_type || CASE WHEN due_at <= %(now)s THEN '_due' ELSE '_later' END, count(*)
    FROM leads_lead WHERE status = 'waiting' GROUP BY 1, 2
    UNION ALL
    SELECT campaign_id, 'held', count(*) FROM leads_lead WHERE status = 'held' GROUP BY 1
) q
JOIN leads_campaign c ON c.id = q.campaign_id
GROUP BY 1, 2
"""


def database_families(*, now: dt.datetime) -> Iterator[Metric]:
    customers = dict(Customer.objects.values_list("pk", "name"))
    labels = ["customer_id", "customer"]

    def names(customer_id: int) -> list[str]:
        return [str(customer_id), customers.get(customer_id, "")]

    queue = GaugeMetricFamily(
        "leadrank_queue_depth",
        "Open leads per customer by queue state: live_due / stale_due (callable now), live_later / "
        "stale_later (rescheduled or called back for later), held (being called).",
        labels=[*labels, "state"],
    )
    depths: dict[tuple[int, str], int] = {}
    with connection.cursor() as cursor:
        cursor.execute(_QUEUE_DEPTH_SQL, {"now": now})
        for customer_id, state, count in cursor.fetchall():
            depths[(customer_id, state)] = int(count)
    for customer_id in sorted(customers):
        for state in _QUEUE_STATES:
            queue.add_metric([*names(customer_id), state], depths.get((customer_id, state), 0))
    yield queue

    # Today's SLA figures as the alert evaluation (every minute) computed them.
    attainment = GaugeMetricFamily(
        "leadrank_sla_attainment_today",
        "Share of today's (UTC) decided live leads served in SLA: in SLA / (in SLA + missed).",
        labels=labels,
    )
    projected = GaugeMetricFamily(
        "leadrank_sla_projected_attainment_today",
        "Today's attainment if every at-risk lead misses and every other pending lead makes it "
        "(the SLA alert's figure).",
        labels=labels,
    )
    target = GaugeMetricFamily("leadrank_sla_target", "SLA target of the policy in force.", labels=labels)
    at_risk = GaugeMetricFamily(
        "leadrank_leads_at_risk",
        "Never-called live leads of today whose SLA deadline is within the policy's sla_protect_minutes.",
        labels=labels,
    )
    contractors = GaugeMetricFamily(
        "leadrank_contractors_active",
        "Contractors with a claim in the customer's campaigns in the last 15 minutes or holding a lead.",
        labels=labels,
    )
    computed = GaugeMetricFamily(
        "leadrank_sla_figures_timestamp_seconds",
        "When the alert evaluation computed the SLA figures above (Unix time): more than a few "
        "minutes old means the beat task is not running.",
        labels=labels,
    )
    for outlook, computed_at in alerts.sla_snapshots():
        customer = names(outlook.customer_id)
        if outlook.attainment is not None:
            attainment.add_metric(customer, outlook.attainment)
        if outlook.projected is not None:
            projected.add_metric(customer, outlook.projected)
        target.add_metric(customer, outlook.target)
        at_risk.add_metric(customer, outlook.at_risk)
        contractors.add_metric(customer, outlook.contractors_active)
        computed.add_metric(customer, computed_at.timestamp())
    yield from (attainment, projected, target, at_risk, contractors, computed)

    with connection.cursor() as cursor:
        cursor.execute(_LEASES_EXPIRED_SQL)
        (expired,) = cursor.fetchone()
    yield CounterMetricFamily(
        "leadrank_leases_expired",
        "Held leads whose lease ran out before an outcome arrived (returned to the queue).",
        value=expired,
    )

    open_by_kind = dict(
        Alert.objects.filter(closed_at__isnull=True)
        .values_list("kind")
        .annotate(n=Count("id"))
        .values_list("kind", "n")
    )
    open_alerts = GaugeMetricFamily("leadrank_alerts_open", "Alerts open now, by kind.", labels=["kind"])
    for kind in AlertKind.values:
        open_alerts.add_metric([kind], open_by_kind.get(kind, 0))
    yield open_alerts


_database_registry = CollectorRegistry(auto_describe=False)
_database_registry.register(DatabaseCollector())


def exposition() -> bytes:
    """The text format of every metric: this machine's processes' counters, then the
    database figures."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(_database_registry)


def reset_multiprocess_dir(path: Path) -> None:
    """Empty the multiprocess folder before the processes that write it start: files of a
    previous run would be added to this run's counters."""
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()


# --- The endpoint ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


# Headers a reverse proxy adds to what it forwards. A request holding one came through a
# proxy, so its TCP peer is the proxy, not the client.
_PROXY_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_FORWARDED",
    "HTTP_X_REAL_IP",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
)


def metrics_allowed(request: HttpRequest) -> bool:
    """Open with DEBUG; otherwise the right bearer token, or a client address in
    ``LEADRANK_METRICS_ALLOWED_IPS``. The address is the TCP peer (``REMOTE_ADDR``), never
    a forwarded header a client could write: behind a proxy, use the token.

    A request a proxy forwarded (it carries one of :data:`_PROXY_HEADERS`) is admitted by
    the token only: its peer is the proxy, which in the usual deployment (granian on
    127.0.0.1, a proxy in front on the same machine) is the loopback address the default
    allows, so every client on the internet would pass as local. A client can only lose
    access by adding such a header, never gain it."""
    if settings.DEBUG:
        return True
    token: str = settings.LEADRANK_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
    if any(name in request.META for name in _PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(tuple(settings.LEADRANK_METRICS_ALLOWED_IPS)))


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: Prometheus text format; 403 outside the allowed addresses and token."""
    if not metrics_allowed(request):
        return HttpResponseForbidden(
            "Metrics are restricted: scrape from an address in LEADRANK_METRICS_ALLOWED_IPS (directly, "
            "not through a proxy) or send 'Authorization: Bearer <LEADRANK_METRICS_TOKEN>'.\n",
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)

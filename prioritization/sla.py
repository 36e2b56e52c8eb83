"""SLA and queue figures (selectors for the stats API and the admin dashboard) and the
daily rollups that keep them fast at millions of leads.

Definitions (the README states them for product staff):

- A lead *counts* for SLA when it is live, or when it became stale through the engine
  after its calls went unanswered (it has a ``became_stale`` event). A lead sent as stale,
  or made stale by the Contract app, never counts. A lead the customer withdrew before
  any call and before its deadline does not count either: nobody could have served it.
- Its *first call* started at ``first_attempt_at``; while that first call is under way
  (the lead is held and was never called before) at ``claimed_at``, the moment
  :func:`prioritization.services.record_outcome` will store as ``first_attempt_at``.
  A rescheduled lead therefore counts once, by its first attempt. A lead withdrawn while
  that first call was under way keeps counting by it (its ``claimed`` event).
- Its *deadline* is ``created_at`` plus the SLA window of the customer's current policy
  version (``sla_window_minutes``), so a changed window applies to past days too.
- *In SLA*: first call at or before the deadline (exactly at the deadline is in SLA).
  *Missed*: first call after the deadline, or no call and the deadline has passed.
  *Pending*: no call yet and the deadline not passed; reported, not in the attainment.
- *Attainment* = in SLA / (in SLA + missed). *TAT* = first call − ``created_at`` of the
  counted leads called so far, from a histogram with fixed buckets (exact to the minute
  up to an hour, coarser after). Days are UTC days of ``created_at``.
- *At risk now*: ready (or due by then), live, never called, deadline within the next N
  minutes (default: the customer's ``sla_protect_minutes``, the claim path's own band).
- *Queue depth*: open leads by type and whether they are due now (``ready``, or
  ``waiting`` with a due time passed) or later (``waiting``); held leads apart.
- *Contractors active*: distinct contractors with a claim in the last N minutes or
  holding a lead.

Speed: past days are read from :class:`~prioritization.models.SlaDailyRollup`, which the
``rollup_sla`` beat task keeps; today (and any day not rolled up yet) is computed live
through the ``lead_customer_created`` index. Queue depth, leads at risk and active
contractors are index scans of the partial queue indexes and the decision log.
"""

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import connection, transaction

from leads.models import Campaign, Customer
from prioritization.models import SlaDailyRollup, SlaRollupDay
from prioritization.services import advisory_lock, current_versions

# Upper bounds of the time-to-first-call histogram, in seconds: one bucket per minute for
# the first hour (the SLA window lives there), then coarser up to a week; the last bucket
# is open. Changing them makes every rollup stale (SlaRollupDay.tat_buckets) until the
# rollup task has recomputed it; meanwhile those days are read live.
TAT_BUCKET_EDGES_SECONDS: tuple[float, ...] = (
    *(60.0 * minute for minute in range(60)),
    3_600.0,
    4_500.0,
    5_400.0,
    7_200.0,
    10_800.0,
    14_400.0,
    21_600.0,
    28_800.0,
    43_200.0,
    86_400.0,
    172_800.0,
    259_200.0,
    604_800.0,
)
TAT_BUCKETS = len(TAT_BUCKET_EDGES_SECONDS)
# "Contractors active" looks back this far for claims (the API's active_minutes).
DEFAULT_ACTIVE_MINUTES = 15
# Longest range the API and the dashboard accept: a year of daily figures.
MAX_RANGE_DAYS = 366
# The dashboard's table of leads at risk shows this many, earliest deadline first.
AT_RISK_LIST_LIMIT = 50
# "Last 7 days" = today and the six days before it.
LAST_DAYS = 7

# The rollup task recomputes these many days before today on every run: what a late lease
# expiry or outcome can still change there is picked up within a run.
ROLLUP_REFRESH_DAYS = 3
# Older days are recomputed when a first call happened since this long ago (a lead called
# days after it arrived changes its day's TAT); longer than a few missed beat periods.
ROLLUP_LATE_CALL_LOOKBACK = dt.timedelta(hours=2)
# Older days never rolled up, or rolled up with another SLA window, are (re)computed at
# most this many per run, newest first, so a policy change on years of history or a first
# run spreads over several runs instead of one long one.
ROLLUP_BACKLOG_DAYS_PER_RUN = 62
# pg_advisory_lock key of the rollup ("LRSL"): one rollup at a time.
ROLLUP_LOCK_KEY = 0x4C52534C
# First half of the two-key transaction lock on one day's rollup: rolling a day up and
# writing leads created on it take turns (see forget_rollups). The second half is the day's
# slot among ROLLUP_DAY_LOCK_SLOTS (days share slots), so a write spanning years of days
# takes a bounded number of PostgreSQL's lock-table entries.
ROLLUP_DAY_LOCK_CLASS = 0x4C52
ROLLUP_DAY_LOCK_SLOTS = 32

_DAY = dt.timedelta(days=1)


# --- Figures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlaCounts:
    live_leads: int = 0  # counted for SLA: in_sla + missed + pending
    in_sla: int = 0
    missed: int = 0
    pending: int = 0
    stale_leads: int = 0  # sent as stale: never counted, shown for context

    def __add__(self, other: "SlaCounts") -> "SlaCounts":
        return SlaCounts(
            self.live_leads + other.live_leads,
            self.in_sla + other.in_sla,
            self.missed + other.missed,
            self.pending + other.pending,
            self.stale_leads + other.stale_leads,
        )

    @property
    def attainment(self) -> float | None:
        """Share of decided leads (in SLA or missed) served in SLA; ``None`` when none is decided."""
        decided = self.in_sla + self.missed
        return self.in_sla / decided if decided else None


def percentile_seconds(counts: Sequence[int], fraction: float) -> float | None:
    """The ``fraction`` quantile of a TAT histogram over :data:`TAT_BUCKET_EDGES_SECONDS`,
    interpolated linearly inside its bucket; the open last bucket answers its lower bound."""
    total = sum(counts)
    if total == 0:
        return None
    rank = fraction * total
    below = 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            low = TAT_BUCKET_EDGES_SECONDS[index]
            if index + 1 == len(TAT_BUCKET_EDGES_SECONDS):
                return low
            high = TAT_BUCKET_EDGES_SECONDS[index + 1]
            return low + (high - low) * max(0.0, rank - below) / count
        below += count
    return TAT_BUCKET_EDGES_SECONDS[-1]  # unreachable: the loop always reaches the total


@dataclass(frozen=True)
class TatFigures:
    histogram: tuple[int, ...]

    @property
    def called(self) -> int:
        return sum(self.histogram)

    @property
    def p50_seconds(self) -> float | None:
        return percentile_seconds(self.histogram, 0.5)

    @property
    def p90_seconds(self) -> float | None:
        return percentile_seconds(self.histogram, 0.9)

    @property
    def p99_seconds(self) -> float | None:
        return percentile_seconds(self.histogram, 0.99)


@dataclass(frozen=True)
class QueueDepth:
    live_due: int = 0
    live_later: int = 0  # rescheduled (or called back) for later
    stale_due: int = 0
    stale_later: int = 0
    held: int = 0  # being called now

    def __add__(self, other: "QueueDepth") -> "QueueDepth":
        return QueueDepth(
            self.live_due + other.live_due,
            self.live_later + other.live_later,
            self.stale_due + other.stale_due,
            self.stale_later + other.stale_later,
            self.held + other.held,
        )

    @property
    def stale(self) -> int:
        return self.stale_due + self.stale_later

    @property
    def total(self) -> int:
        return self.live_due + self.live_later + self.stale + self.held


@dataclass(frozen=True)
class DayFigures:
    day: dt.date
    sla: SlaCounts


@dataclass(frozen=True)
class Figures:
    sla_range: SlaCounts
    sla_today: SlaCounts
    sla_last_7_days: SlaCounts
    tat: TatFigures  # of the range
    queue: QueueDepth
    at_risk: int
    contractors_active: int
    daily: tuple[DayFigures, ...]  # each day of the range
    # Of the leads at risk, those created today (UTC): the ones today's SLA counts hold.
    # Just after midnight, yesterday's last leads are at risk too, but they are yesterday's.
    at_risk_today: int = 0


@dataclass(frozen=True)
class CustomerFigures:
    customer_id: int
    name: str
    sla_window_minutes: float
    sla_target: float
    at_risk_minutes: float
    figures: Figures

    @property
    def meets_target(self) -> bool | None:
        attainment = self.figures.sla_range.attainment
        return None if attainment is None else attainment >= self.sla_target


@dataclass(frozen=True)
class CampaignFigures:
    campaign_id: int
    customer_id: int
    name: str
    figures: Figures


@dataclass(frozen=True)
class AtRiskLead:
    id: int
    customer_id: int
    campaign_id: int
    created_at: dt.datetime
    sla_deadline: dt.datetime
    status: str

    def minutes_left(self, now: dt.datetime) -> float:
        return (self.sla_deadline - now).total_seconds() / 60


@dataclass(frozen=True)
class SlaReport:
    start: dt.date
    end: dt.date
    today: dt.date
    now: dt.datetime
    active_minutes: float
    at_risk_minutes: float | None  # None: each customer's sla_protect_minutes
    overall: Figures
    customers: tuple[CustomerFigures, ...]
    campaigns: tuple[CampaignFigures, ...]
    at_risk_leads: tuple[AtRiskLead, ...]  # earliest deadline first, at most AT_RISK_LIST_LIMIT
    tat_bucket_edges_seconds: tuple[float, ...] = TAT_BUCKET_EDGES_SECONDS


def utc_day(moment: dt.datetime) -> dt.date:
    return moment.astimezone(dt.UTC).date()


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)


def days_between(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    day = start
    while day <= end:
        yield day
        day += _DAY


# --- Per-day SLA counts: the one definition, in SQL --------------------------------------------

# Counts per (customer, campaign, UTC day, TAT bucket) of leads created in [start, end) by
# the customers given, each with its SLA window. Served by lead_customer_created; the
# lateral lookups of events run only for stale leads that were called (a became_stale
# event) and for withdrawn leads without a call (the claim under way), each through
# lead_event_history (the one-time filters inside them).
_DAY_COUNTS_SQL = """
WITH w AS (
    SELECT * FROM unnest(%(customers)s::bigint[], %(windows)s::float8[]) AS w(customer_id, window_minutes)
), f AS (
    SELECT l.id, l.customer_id, l.campaign_id, l.lead_type, l.created_at, l.closed_reason, l.closed_at,
           (l.created_at AT TIME ZONE 'UTC')::date AS day,
           COALESCE(l.first_attempt_at, CASE WHEN l.status = 'held' THEN l.claimed_at END) AS known_call,
           l.created_at + w.window_minutes * interval '1 minute' AS deadline
    FROM leads_lead l JOIN w ON w.customer_id = l.customer_id
    WHERE l.customer_id = ANY(%(customers)s) AND l.created_at >= %(start)s AND l.created_at < %(end)s
      {campaign_filter}
), c AS (
    -- Withdrawing a lead clears its claim: one withdrawn while its first call was under way
    -- (its last claim neither released nor expired) counts by that call, as it did while held.
    SELECT f.*, COALESCE(f.known_call, during.at) AS first_call
    FROM f LEFT JOIN LATERAL (
        SELECT last.at FROM (
            SELECT e.kind, e.at FROM leads_leadevent e
            WHERE f.closed_reason = 'withdrawn' AND f.known_call IS NULL
              AND e.lead_id = f.id
              AND (e.kind IN ('claimed', 'released', 'lease_expired')
                   OR (e.kind = 'updated' AND e.detail ->> 'rescheduled_at' IS NOT NULL))
              AND e.at <= f.closed_at
            ORDER BY e.at DESC, e.id DESC
            LIMIT 1
        ) last
        WHERE last.kind = 'claimed'
    ) during ON true
), g AS (
    SELECT c.*,
           (c.lead_type = 'live' OR became.stale IS NOT NULL)
           -- Closed from outside before any call, while still pending: withdrawn, or given an
           -- imported past outcome. Leads imported as history are closed as of their arrival,
           -- never queued; a queued lead an import closed after its deadline was missed.
           AND NOT (c.closed_reason IN ('withdrawn', 'past_converted', 'past_not_converted')
                    AND c.first_call IS NULL AND c.closed_at <= c.deadline)
           AS counted
    FROM c LEFT JOIN LATERAL (
        SELECT true AS stale FROM leads_leadevent e
        WHERE c.lead_type = 'stale' AND c.first_call IS NOT NULL
          AND e.lead_id = c.id AND e.kind = 'became_stale'
        LIMIT 1
    ) became ON true
)
SELECT customer_id, campaign_id, day,
       CASE WHEN counted AND first_call IS NOT NULL THEN
           width_bucket(GREATEST(extract(epoch FROM first_call - created_at)::float8, 0), %(edges)s::float8[])
       END AS bucket,
       count(*) FILTER (WHERE counted),
       count(*) FILTER (WHERE counted AND first_call <= deadline),
       count(*) FILTER (WHERE counted AND (first_call > deadline
                                           OR (first_call IS NULL AND deadline < %(now)s))),
       count(*) FILTER (WHERE counted AND first_call IS NULL AND deadline >= %(now)s),
       count(*) FILTER (WHERE NOT counted AND lead_type = 'stale')
FROM g
GROUP BY 1, 2, 3, 4
"""


@dataclass
class _DayCell:
    """Counts of one campaign on one day (mutable while rows are summed)."""

    customer_id: int
    sla: SlaCounts = field(default_factory=SlaCounts)
    tat: list[int] = field(default_factory=lambda: [0] * TAT_BUCKETS)


_Cells = dict[tuple[int, dt.date], _DayCell]  # (campaign_id, day) -> counts


def _count_days_live(
    cursor: Any,
    *,
    windows: dict[int, float],
    start: dt.date,
    end: dt.date,
    now: dt.datetime,
    campaign_id: int | None = None,
) -> _Cells:
    """Counts of the leads created on days ``start``..``end`` (inclusive) by these customers."""
    customers = sorted(windows)
    cells: _Cells = {}
    if not customers:
        return cells
    campaign_filter = "AND l.campaign_id = %(campaign)s" if campaign_id is not None else ""
    cursor.execute(
        _DAY_COUNTS_SQL.format(campaign_filter=campaign_filter),
        {
            "customers": customers,
            "windows": [windows[c] for c in customers],
            "start": day_start(start),
            "end": day_start(end + _DAY),
            "edges": list(TAT_BUCKET_EDGES_SECONDS),
            "now": now,
            "campaign": campaign_id,
        },
    )
    for customer, campaign, day, bucket, live, in_sla, missed, pending, stale in cursor.fetchall():
        cell = cells.setdefault((campaign, day), _DayCell(customer))
        cell.sla += SlaCounts(live, in_sla, missed, pending, stale)
        if bucket is not None:
            cell.tat[bucket - 1] += live
    return cells


# --- The report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Customer:
    id: int
    name: str
    window: float
    target: float
    protect: float


def sla_report(
    *,
    now: dt.datetime,
    start: dt.date,
    end: dt.date,
    customer_id: int | None = None,
    campaign_id: int | None = None,
    at_risk_minutes: float | None = None,
    active_minutes: float = DEFAULT_ACTIVE_MINUTES,
) -> SlaReport:
    """SLA, TAT, queue, at-risk and contractor figures, overall, per customer and per campaign.

    ``customer_id`` / ``campaign_id`` narrow the scope (both ``None``: every customer); the
    caller has checked that they exist and that the campaign belongs to the customer. SLA
    and TAT figures cover leads created on the UTC days ``start``..``end``; SLA is also
    given for today and the last 7 days. Queue, at-risk and contractor figures are as of ``now``.
    """
    today = utc_day(now)
    campaign_rows = Campaign.objects.order_by("customer_id", "name", "id")
    customer_rows = Customer.objects.order_by("name", "id")
    if campaign_id is not None:
        campaign_rows = campaign_rows.filter(pk=campaign_id)
        customer_rows = customer_rows.filter(campaigns__id=campaign_id)
    elif customer_id is not None:
        campaign_rows = campaign_rows.filter(customer_id=customer_id)
        customer_rows = customer_rows.filter(pk=customer_id)
    campaigns = list(campaign_rows.values_list("id", "customer_id", "name"))
    names = dict(customer_rows.values_list("id", "name"))
    versions = current_versions(names)
    customers = [
        _Customer(c, names[c], v.sla_window_minutes, v.sla_target, v.sla_protect_minutes)
        for c, v in sorted(versions.items(), key=lambda item: (names[item[0]], item[0]))
    ]
    windows = {c.id: c.window for c in customers}
    campaign_ids = [c[0] for c in campaigns]
    range_days = list(days_between(start, end))
    recent_days = list(days_between(today - (LAST_DAYS - 1) * _DAY, today))
    wanted = sorted(set(range_days) | set(recent_days))

    with connection.cursor() as cursor:
        cells = _day_cells(cursor, windows=windows, days=wanted, now=now, campaign_id=campaign_id)
        queues = _queue_depths(cursor, campaign_ids=campaign_ids, now=now)
        until = {}
        protect = {c.id: c.protect for c in customers}
        for cid, customer, _ in campaigns:
            minutes = at_risk_minutes if at_risk_minutes is not None else protect[customer]
            until[cid] = now + dt.timedelta(minutes=minutes)
        at_risk = _leads_at_risk(cursor, until=until, now=now)
        active = _active_contractors(
            cursor, campaign_ids=campaign_ids, since=now - dt.timedelta(minutes=active_minutes), now=now
        )

    at_risk_by_campaign: dict[int, int] = defaultdict(int)
    at_risk_today_by_campaign: dict[int, int] = defaultdict(int)
    for lead in at_risk:
        at_risk_by_campaign[lead.campaign_id] += 1
        if utc_day(lead.created_at) == today:
            at_risk_today_by_campaign[lead.campaign_id] += 1

    sums = _CellSums(cells, campaigns=campaigns, customers=customers, range_days=range_days, today=today)

    def figures(
        campaign_set: Iterable[int], counts: _Counts, *, daily: Sequence[Sequence[int]] | None
    ) -> Figures:
        contractors: set[int] = set()
        queue = QueueDepth()
        at_risk_count = at_risk_today_count = 0
        for cid in campaign_set:
            contractors |= active.get(cid, set())
            queue += queues.get(cid, QueueDepth())
            at_risk_count += at_risk_by_campaign[cid]
            at_risk_today_count += at_risk_today_by_campaign[cid]
        return Figures(
            sla_range=SlaCounts(*counts.sla_range),
            sla_today=SlaCounts(*counts.sla_today),
            sla_last_7_days=SlaCounts(*counts.sla_recent),
            tat=TatFigures(tuple(counts.tat)),
            queue=queue,
            at_risk=at_risk_count,
            at_risk_today=at_risk_today_count,
            contractors_active=len(contractors),
            daily=tuple(DayFigures(day, SlaCounts(*row)) for day, row in zip(range_days, daily, strict=True))
            if daily is not None
            else (),
        )

    by_customer: dict[int, list[int]] = defaultdict(list)
    for cid, customer, _ in campaigns:
        by_customer[customer].append(cid)
    return SlaReport(
        start=start,
        end=end,
        today=today,
        now=now,
        active_minutes=active_minutes,
        at_risk_minutes=at_risk_minutes,
        overall=figures(campaign_ids, sums.overall(), daily=sums.overall_daily()),
        customers=tuple(
            CustomerFigures(
                customer_id=c.id,
                name=c.name,
                sla_window_minutes=c.window,
                sla_target=c.target,
                at_risk_minutes=at_risk_minutes if at_risk_minutes is not None else c.protect,
                figures=figures(by_customer[c.id], sums.customer(index), daily=sums.customer_daily(index)),
            )
            for index, c in enumerate(customers)
        ),
        campaigns=tuple(
            CampaignFigures(
                campaign_id=cid,
                customer_id=customer,
                name=name,
                figures=figures([cid], sums.campaign(index), daily=None),
            )
            for index, (cid, customer, name) in enumerate(campaigns)
        ),
        at_risk_leads=tuple(at_risk[:AT_RISK_LIST_LIMIT]),
    )


@dataclass(frozen=True)
class _Counts:
    """Summed counts of one scope: SLA counts (SlaCounts' field order) and the TAT histogram."""

    sla_range: list[int]
    sla_today: list[int]
    sla_recent: list[int]
    tat: list[int]


class _CellSums:
    """The day cells summed per campaign, per customer and overall, in one pass of array
    additions: a report over a year of 200 campaigns has tens of thousands of cells, each
    with a TAT histogram, and summing them in Python loops would dominate the request."""

    def __init__(
        self,
        cells: _Cells,
        *,
        campaigns: Sequence[tuple[int, int, str]],
        customers: Sequence[_Customer],
        range_days: Sequence[dt.date],
        today: dt.date,
    ) -> None:
        campaign_index = {cid: i for i, (cid, _, _) in enumerate(campaigns)}
        customer_index = {c.id: i for i, c in enumerate(customers)}
        day_index = {day: i for i, day in enumerate(range_days)}
        recent_from = today - (LAST_DAYS - 1) * _DAY
        keys = [key for key in cells if key[0] in campaign_index]
        counts = np.array([_count_tuple(cells[key].sla) for key in keys], dtype=np.int64).reshape(
            len(keys), 5
        )
        tats = np.array([cells[key].tat for key in keys], dtype=np.int64).reshape(len(keys), TAT_BUCKETS)
        rows = np.array([campaign_index[cid] for cid, _ in keys], dtype=np.intp)
        days = np.array([day_index.get(day, -1) for _, day in keys], dtype=np.intp)
        in_range = days >= 0
        recent = np.array([recent_from <= day <= today for _, day in keys], dtype=bool)
        is_today = np.array([day == today for _, day in keys], dtype=bool)
        self.owner = np.array([customer_index[customer] for _, customer, _ in campaigns], dtype=np.intp)

        n_campaigns, n_customers = len(campaigns), len(customers)
        self.range = self._by(n_campaigns, rows[in_range], counts[in_range])
        self.today = self._by(n_campaigns, rows[is_today], counts[is_today])
        self.recent = self._by(n_campaigns, rows[recent], counts[recent])
        self.tat = self._by(n_campaigns, rows[in_range], tats[in_range])
        self.customer_sums = [
            self._by(n_customers, self.owner, table)
            for table in (self.range, self.today, self.recent, self.tat)
        ]
        self.daily = np.zeros((n_customers, len(range_days), 5), dtype=np.int64)
        np.add.at(self.daily, (self.owner[rows[in_range]], days[in_range]), counts[in_range])

    @staticmethod
    def _by(groups: int, index: Any, values: Any) -> Any:
        table = np.zeros((groups, values.shape[1]), dtype=np.int64)
        np.add.at(table, index, values)
        return table

    def campaign(self, index: int) -> _Counts:
        return _Counts(*(table[index].tolist() for table in (self.range, self.today, self.recent, self.tat)))

    def customer(self, index: int) -> _Counts:
        return _Counts(*(table[index].tolist() for table in self.customer_sums))

    def overall(self) -> _Counts:
        return _Counts(*(table.sum(axis=0).tolist() for table in self.customer_sums))

    def customer_daily(self, index: int) -> list[list[int]]:
        rows: list[list[int]] = self.daily[index].tolist()
        return rows

    def overall_daily(self) -> list[list[int]]:
        rows: list[list[int]] = self.daily.sum(axis=0).tolist()
        return rows


def _count_tuple(counts: SlaCounts) -> tuple[int, int, int, int, int]:
    return (counts.live_leads, counts.in_sla, counts.missed, counts.pending, counts.stale_leads)


def _day_cells(
    cursor: Any, *, windows: dict[int, float], days: list[dt.date], now: dt.datetime, campaign_id: int | None
) -> _Cells:
    """Counts per (campaign, day): from the rollups where a customer's day is rolled up with
    its current window, live for the rest (today, always)."""
    if not windows or not days:
        return {}
    today = utc_day(now)
    rolled: dict[dt.date, set[int]] = defaultdict(set)
    # Today is never read from a rollup. The days asked for need not be contiguous (an old
    # range and the last 7 days), hence a list rather than a span.
    past = [day for day in days if day < today]
    for customer, day, window in SlaRollupDay.objects.filter(
        customer_id__in=list(windows), day__in=past, tat_buckets=TAT_BUCKETS
    ).values_list("customer_id", "day", "window_minutes"):
        if window == windows[customer]:
            rolled[day].add(customer)
    wanted = set(days)
    cells: _Cells = {}
    rollups = SlaDailyRollup.objects.filter(customer_id__in=list(windows), day__in=past).values_list(
        "customer_id",
        "campaign_id",
        "day",
        "live_leads",
        "in_sla",
        "missed",
        "pending",
        "stale_leads",
        "tat_counts",
    )
    if campaign_id is not None:
        rollups = rollups.filter(campaign_id=campaign_id)
    for customer, campaign, day, live, in_sla, missed, pending, stale, tat in rollups:
        if day in wanted and customer in rolled[day]:
            cells[(campaign, day)] = _DayCell(
                customer, SlaCounts(live, in_sla, missed, pending, stale), list(tat)
            )

    # What is not rolled up is counted live, one query per run of consecutive days, for the
    # customers missing somewhere in that run (their rolled-up days in it are dropped).
    missing = {day: set(windows) - rolled[day] for day in days}
    for run_start, run_end in _runs([day for day in days if missing[day]]):
        customers: set[int] = set()
        for day in days_between(run_start, run_end):
            customers |= missing[day]
        counted = _count_days_live(
            cursor,
            windows={c: windows[c] for c in customers},
            start=run_start,
            end=run_end,
            now=now,
            campaign_id=campaign_id,
        )
        for (campaign, day), cell in counted.items():
            if day in wanted and cell.customer_id in missing[day]:
                cells[(campaign, day)] = cell
    return cells


def _runs(days: Sequence[dt.date]) -> Iterator[tuple[dt.date, dt.date]]:
    """Consecutive days as (first, last) pairs; ``days`` sorted."""
    if not days:
        return
    first = last = days[0]
    for day in days[1:]:
        if day != last + _DAY:
            yield first, last
            first = day
        last = day
    yield first, last


# --- Queue depth, leads at risk, contractors active: now ----------------------------------------

# One statement per queue state so that each part walks its partial index: lead_claim_ready
# (an index-only count by campaign and type), lead_waiting_due and lead_held_lease.
_QUEUE_SQL = """
SELECT campaign_id, 'ready', lead_type, true, count(*) FROM leads_lead
WHERE status = 'ready' AND campaign_id = ANY(%(campaigns)s) GROUP BY campaign_id, lead_type
UNION ALL
SELECT campaign_id, 'waiting', lead_type, due_at <= %(now)s, count(*) FROM leads_lead
WHERE status = 'waiting' AND campaign_id = ANY(%(campaigns)s)
GROUP BY campaign_id, lead_type, due_at <= %(now)s
UNION ALL
SELECT campaign_id, 'held', lead_type, true, count(*) FROM leads_lead
WHERE status = 'held' AND campaign_id = ANY(%(campaigns)s) GROUP BY campaign_id, lead_type
"""


def _queue_depths(cursor: Any, *, campaign_ids: list[int], now: dt.datetime) -> dict[int, QueueDepth]:
    depths: dict[int, QueueDepth] = {}
    if not campaign_ids:
        return depths
    cursor.execute(_QUEUE_SQL, {"campaigns": campaign_ids, "now": now})
    for campaign, status, lead_type, due, count in cursor.fetchall():
        live = lead_type == "live"
        if status == "held":
            part = QueueDepth(held=count)
        elif due:
            part = QueueDepth(live_due=count) if live else QueueDepth(stale_due=count)
        else:
            part = QueueDepth(live_later=count) if live else QueueDepth(stale_later=count)
        depths[campaign] = depths.get(campaign, QueueDepth()) + part
    return depths


# Per campaign, its own horizon: ready leads through lead_claim_sla (the claim path's SLA
# index) and waiting ones due by the horizon through lead_waiting_due.
_AT_RISK_SQL = """
SELECT r.id, r.customer_id, r.campaign_id, r.created_at, r.sla_deadline, r.status
FROM unnest(%(campaigns)s::bigint[], %(until)s::timestamptz[]) AS c(campaign_id, until)
CROSS JOIN LATERAL (
    SELECT id, customer_id, campaign_id, created_at, sla_deadline, status FROM leads_lead
    WHERE campaign_id = c.campaign_id AND status = 'ready' AND lead_type = 'live'
      AND first_attempt_at IS NULL AND sla_deadline > %(now)s AND sla_deadline <= c.until
    UNION ALL
    SELECT id, customer_id, campaign_id, created_at, sla_deadline, status FROM leads_lead
    WHERE campaign_id = c.campaign_id AND status = 'waiting' AND due_at <= c.until AND lead_type = 'live'
      AND first_attempt_at IS NULL AND sla_deadline > %(now)s AND sla_deadline <= c.until
) r
ORDER BY r.sla_deadline, r.id
"""


def _leads_at_risk(cursor: Any, *, until: dict[int, dt.datetime], now: dt.datetime) -> list[AtRiskLead]:
    if not until:
        return []
    campaigns = sorted(until)
    cursor.execute(_AT_RISK_SQL, {"campaigns": campaigns, "until": [until[c] for c in campaigns], "now": now})
    return [AtRiskLead(*row) for row in cursor.fetchall()]


# Claims through decision_recent (a time range), holders through lead_held_lease.
_ACTIVE_SQL = """
SELECT d.contractor_id, l.campaign_id
FROM prioritization_decision d JOIN leads_lead l ON l.id = d.lead_id
WHERE d.decided_at > %(since)s AND d.decided_at <= %(now)s AND l.campaign_id = ANY(%(campaigns)s)
UNION
SELECT holder_id, campaign_id FROM leads_lead WHERE status = 'held' AND campaign_id = ANY(%(campaigns)s)
"""


def _active_contractors(
    cursor: Any, *, campaign_ids: list[int], since: dt.datetime, now: dt.datetime
) -> dict[int, set[int]]:
    """Contractor ids active per campaign (sets: one contractor counts once per scope)."""
    active: dict[int, set[int]] = defaultdict(set)
    if campaign_ids:
        cursor.execute(_ACTIVE_SQL, {"campaigns": campaign_ids, "since": since, "now": now})
        for contractor, campaign in cursor.fetchall():
            active[campaign].add(contractor)
    return active


# --- Rollups -----------------------------------------------------------------------------------


@dataclass
class RollupSummary:
    days: int = 0  # distinct days computed
    customer_days: int = 0  # (customer, day) pairs marked rolled up
    rows: int = 0  # campaign rows written
    skipped: bool = False  # another rollup was running


def settled(day: dt.date, window_minutes: float, now: dt.datetime) -> bool:
    """Can no lead created on ``day`` be pending any more? (Its last deadline has passed.)"""
    return day_start(day + _DAY) + dt.timedelta(minutes=window_minutes) <= now


# Leads of days before `before` whose claim happened since `since`: their day's TAT moved.
_LATE_CALLS_SQL = """
SELECT DISTINCT l.customer_id, (l.created_at AT TIME ZONE 'UTC')::date
FROM prioritization_decision d JOIN leads_lead l ON l.id = d.lead_id
WHERE d.decided_at >= %(since)s AND l.created_at < %(before)s
"""

# Each customer's first lead (an index lookup per customer on lead_customer_created).
_FIRST_DAYS_SQL = """
SELECT c.id, (SELECT (min(l.created_at) AT TIME ZONE 'UTC')::date
              FROM leads_lead l WHERE l.customer_id = c.id)
FROM leads_customer c
"""

# Days from a customer's first lead up to `last` that are not rolled up, or were with
# another window or histogram: newest first, at most `limit`.
_BACKLOG_SQL = """
SELECT c.customer_id, d.day::date
FROM unnest(%(customers)s::bigint[], %(windows)s::float8[], %(firsts)s::date[])
     AS c(customer_id, window_minutes, first_day)
CROSS JOIN LATERAL generate_series(c.first_day, %(last)s::date, interval '1 day') AS d(day)
LEFT JOIN prioritization_slarollupday r ON r.customer_id = c.customer_id AND r.day = d.day::date
WHERE r.id IS NULL OR r.window_minutes <> c.window_minutes OR r.tat_buckets <> %(buckets)s
ORDER BY d.day DESC, c.customer_id
LIMIT %(limit)s
"""


def rollup_sla(
    *, now: dt.datetime, days: Iterable[dt.date] | None = None, wait: bool = False
) -> RollupSummary:
    """Compute the daily SLA rollups; safe to run again at any moment (each (customer, day)
    is replaced as a whole, in one transaction).

    Without ``days``: the last :data:`ROLLUP_REFRESH_DAYS` days, older days that a recent
    first call changed, and up to :data:`ROLLUP_BACKLOG_DAYS_PER_RUN` older days never rolled
    up or rolled up with another window. With ``days``: those days. Only days whose every
    deadline has passed (:func:`settled`) are rolled up; the others are read live anyway.

    One rollup runs at a time (an advisory lock): a second one returns ``skipped``, or with
    ``wait`` waits for the first to finish.
    """
    summary = RollupSummary()
    with advisory_lock(ROLLUP_LOCK_KEY, wait=wait) as locked, connection.cursor() as cursor:
        if not locked:
            summary.skipped = True
            return summary
        windows = {
            c: v.sla_window_minutes
            for c, v in current_versions(Customer.objects.values_list("id", flat=True)).items()
        }
        targets = (
            _days_to_roll(cursor, windows=windows, now=now)
            if days is None
            else _given_days(days, windows, now)
        )
        for day in sorted(targets):
            _roll_day(
                cursor, day=day, windows={c: windows[c] for c in targets[day]}, now=now, summary=summary
            )
    return summary


def _given_days(
    days: Iterable[dt.date], windows: dict[int, float], now: dt.datetime
) -> dict[dt.date, set[int]]:
    targets: dict[dt.date, set[int]] = {}
    for day in set(days):
        customers = {c for c, window in windows.items() if settled(day, window, now)}
        if customers:
            targets[day] = customers
    return targets


def _days_to_roll(cursor: Any, *, windows: dict[int, float], now: dt.datetime) -> dict[dt.date, set[int]]:
    today = utc_day(now)
    refresh_from = today - ROLLUP_REFRESH_DAYS * _DAY
    targets: dict[dt.date, set[int]] = defaultdict(set)
    for day in days_between(refresh_from, today - _DAY):
        for customer, window in windows.items():
            if settled(day, window, now):
                targets[day].add(customer)
    cursor.execute(
        _LATE_CALLS_SQL, {"since": now - ROLLUP_LATE_CALL_LOOKBACK, "before": day_start(refresh_from)}
    )
    for customer, day in cursor.fetchall():
        if customer in windows:
            targets[day].add(customer)
    cursor.execute(_FIRST_DAYS_SQL)
    firsts = {
        c: first
        for c, first in cursor.fetchall()
        if first is not None and c in windows and first < refresh_from
    }
    if firsts:
        customers = sorted(firsts)
        cursor.execute(
            _BACKLOG_SQL,
            {
                "customers": customers,
                "windows": [windows[c] for c in customers],
                "firsts": [firsts[c] for c in customers],
                "last": refresh_from - _DAY,
                "buckets": TAT_BUCKETS,
                "limit": ROLLUP_BACKLOG_DAYS_PER_RUN * len(customers),
            },
        )
        backlog: dict[dt.date, set[int]] = defaultdict(set)
        for customer, day in cursor.fetchall():
            if len(backlog) >= ROLLUP_BACKLOG_DAYS_PER_RUN and day not in backlog:
                break
            backlog[day].add(customer)
        for day, customers_of_day in backlog.items():
            targets[day] |= customers_of_day
    return targets


_DELETE_DAY_SQL = """
DELETE FROM prioritization_sladailyrollup WHERE customer_id = ANY(%(customers)s) AND day = %(day)s
"""
# One statement for the day's rows (an ORM bulk_create spends most of its time preparing
# each histogram element). Counts travel as one 2-D array, in SlaCounts' field order;
# histograms as array literals, since unnest() would flatten a 2-D array of them.
_INSERT_DAY_SQL = """
INSERT INTO prioritization_sladailyrollup (
    customer_id, campaign_id, day, live_leads, in_sla, missed, pending, stale_leads, tat_counts, computed_at)
SELECT r.customer_id, r.campaign_id, %(day)s,
       c[r.n][1], c[r.n][2], c[r.n][3], c[r.n][4], c[r.n][5], r.tat::int[], %(now)s
FROM unnest(%(customers)s::bigint[], %(campaigns)s::bigint[], %(tats)s::text[]) WITH ORDINALITY
     AS r(customer_id, campaign_id, tat, n),
     (SELECT %(counts)s::int[] AS c) counts
"""

_UPSERT_DAY_SQL = """
INSERT INTO prioritization_slarollupday (customer_id, day, window_minutes, tat_buckets, computed_at)
SELECT customer_id, %(day)s, window_minutes, %(buckets)s, %(now)s
FROM unnest(%(customers)s::bigint[], %(windows)s::float8[]) AS w(customer_id, window_minutes)
ON CONFLICT (customer_id, day) DO UPDATE
SET window_minutes = EXCLUDED.window_minutes, tat_buckets = EXCLUDED.tat_buckets,
    computed_at = EXCLUDED.computed_at
"""


_LOCK_DAYS_SQL = """
SELECT pg_advisory_xact_lock{mode}(%(lock_class)s, slot) FROM unnest(%(slots)s::int[]) AS slot ORDER BY slot
"""
_LOCK_DAYS_SHARED_SQL = _LOCK_DAYS_SQL.format(mode="_shared")
_LOCK_DAYS_EXCLUSIVE_SQL = _LOCK_DAYS_SQL.format(mode="")
_FORGET_DAYS_SQL = """
DELETE FROM prioritization_slarollupday r
USING unnest(%(customers)s::bigint[], %(days)s::date[]) AS f(customer_id, day)
WHERE r.customer_id = f.customer_id AND r.day = f.day
"""


def _lock_days(cursor: Any, days: Iterable[dt.date], *, shared: bool) -> None:
    cursor.execute(
        _LOCK_DAYS_SHARED_SQL if shared else _LOCK_DAYS_EXCLUSIVE_SQL,
        {
            "lock_class": ROLLUP_DAY_LOCK_CLASS,
            "slots": sorted({day.toordinal() % ROLLUP_DAY_LOCK_SLOTS for day in days}),
        },
    )


def forget_rollups(cursor: Any, written: Iterable[tuple[int, dt.date]], *, now: dt.datetime) -> None:
    """Leads were added or changed, in the caller's transaction, with these (customer, day of
    creation) pairs: mark those of days the rollup task no longer refreshes on every run (with
    a day to spare, for a run late around midnight) as not rolled up. Their figures are
    counted live until the rollup task's backlog rolls them up again.

    Each day's lock is taken shared here and exclusive by :func:`_roll_day`, which counts
    inside it: a rollup either finishes before the write (whose commit then drops its mark)
    or counts after the write has committed, never in between.
    """
    refreshed_from = utc_day(now) - (ROLLUP_REFRESH_DAYS - 1) * _DAY
    days = {(customer_id, day) for customer_id, day in written if day < refreshed_from}
    if not days:
        return
    _lock_days(cursor, (day for _, day in days), shared=True)
    pairs = sorted(days)
    cursor.execute(_FORGET_DAYS_SQL, {"customers": [c for c, _ in pairs], "days": [day for _, day in pairs]})


def _roll_day(
    cursor: Any, *, day: dt.date, windows: dict[int, float], now: dt.datetime, summary: RollupSummary
) -> None:
    """Replace the rollup rows of these customers' ``day`` and mark it rolled up."""
    customers = sorted(windows)
    with transaction.atomic():
        _lock_days(cursor, [day], shared=False)
        cells = _count_days_live(cursor, windows=windows, start=day, end=day, now=now)
        cursor.execute(_DELETE_DAY_SQL, {"customers": customers, "day": day})
        rows = list(cells.items())
        cursor.execute(
            _INSERT_DAY_SQL,
            {
                "day": day,
                "now": now,
                "customers": [cell.customer_id for _, cell in rows],
                "campaigns": [campaign for (campaign, _), _ in rows],
                "counts": [list(_count_tuple(cell.sla)) for _, cell in rows],
                "tats": ["{" + ",".join(map(str, cell.tat)) + "}" for _, cell in rows],
            },
        )
        cursor.execute(
            _UPSERT_DAY_SQL,
            {
                "day": day,
                "buckets": TAT_BUCKETS,
                "now": now,
                "customers": customers,
                "windows": [windows[c] for c in customers],
            },
        )
    summary.days += 1
    summary.customer_days += len(customers)
    summary.rows += len(cells)

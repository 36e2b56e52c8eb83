"""Writes to the lead data store: upserts from the API and from files.

Every way leads come in ends in :func:`upsert_leads`, one set-based
``INSERT … ON CONFLICT (customer_id, external_id) DO NOTHING`` per batch (and, for the
leads that already existed, one locking ``SELECT`` and one ``UPDATE … FROM``), so the API,
the admin import and the CLI import store exactly the same thing.
"""

import csv
import datetime as dt
import itertools
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, get_args

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone
from django.utils.text import Truncator

from leads.importers import (
    LEAD_FIELDS,
    OUTCOME_FIELD,
    ColumnPlan,
    FieldErrors,
    ImportFileError,
    LeadInput,
    LeadMapping,
    Table,
    count_data_rows,
    latest_moment_for,
    open_table,
    parse_lead,
    parse_outcome,
    plan_columns,
    row_to_raw,
)
from leads.models import Campaign, Customer, EventKind, Lead, LeadEvent, QueueStatus
from prioritization import metrics
from prioritization.calling_hours import CallingHours, next_opening
from prioritization.services import (
    ArrivalScorer,
    calling_hours_of,
    current_versions,
    params_for_version,
    rescore_lead_ids,
    score_lead,
)
from prioritization.sla import forget_rollups, utc_day

logger = logging.getLogger(__name__)

UpsertStatus = Literal["created", "updated"]

# Rows per upsert statement (and per transaction) in file imports: large enough that
# per-statement overhead vanishes, small enough that row locks are held ≪ 1 s and a
# failure loses no committed chunk.
IMPORT_CHUNK_ROWS = 20_000


# --- Referential checks -----------------------------------------------------------------


@dataclass
class ReferenceCache:
    """Customers' plans and campaigns' owners, loaded on first sight of each id."""

    customer_plans: dict[int, str] = field(default_factory=dict)
    campaign_customers: dict[int, int] = field(default_factory=dict)
    _missing_customers: set[int] = field(default_factory=set)
    _missing_campaigns: set[int] = field(default_factory=set)

    def load(self, leads: Iterable[LeadInput]) -> None:
        customer_ids = set()
        campaign_ids = set()
        for lead in leads:
            customer_ids.add(lead.customer_id)
            campaign_ids.add(lead.campaign_id)
        new_customers = customer_ids - self.customer_plans.keys() - self._missing_customers
        new_campaigns = campaign_ids - self.campaign_customers.keys() - self._missing_campaigns
        if new_customers:
            found = dict(Customer.objects.filter(id__in=new_customers).values_list("id", "pricing_plan"))
            self.customer_plans.update(found)
            self._missing_customers |= new_customers - found.keys()
        if new_campaigns:
            owners = dict(Campaign.objects.filter(id__in=new_campaigns).values_list("id", "customer_id"))
            self.campaign_customers.update(owners)
            self._missing_campaigns |= new_campaigns - owners.keys()

    def check(self, lead: LeadInput, *, allowed_customer_id: int | None) -> FieldErrors:
        """Field errors for references that do not hold; empty when the lead may be stored."""
        errors: FieldErrors = {}
        if allowed_customer_id is not None and lead.customer_id != allowed_customer_id:
            errors["customer_id"] = [f"This API key may only send leads of customer {allowed_customer_id}."]
        elif lead.customer_id not in self.customer_plans:
            errors["customer_id"] = [f"Unknown customer {lead.customer_id}."]
        owner = self.campaign_customers.get(lead.campaign_id)
        # A key bound to one customer is told nothing about other customers' campaigns
        # (not even that they exist, nor who owns them).
        if owner is None or (allowed_customer_id is not None and owner != allowed_customer_id):
            errors["campaign_id"] = [f"Unknown campaign {lead.campaign_id}."]
        elif owner != lead.customer_id:
            errors["campaign_id"] = [
                f"Campaign {lead.campaign_id} belongs to customer {owner}, "
                f"not to customer {lead.customer_id}."
            ]
        return errors


# --- Upsert -------------------------------------------------------------------------------

_STAGE_COLUMNS = (
    *LeadInput._fields,  # COPY writes each LeadInput as it is, then its arrival score
    # Computed on arrival by prioritization.services.ArrivalScorer:
    "due_at",
    "priority_key",
    "sla_deadline",
    "scored_version",
)
# Leads are COPYed into the UNLOGGED table leads_lead_stage (see migration 0002), tagged
# with a batch id taken from the session setting leadrank.stage_batch (the column's
# default, so COPY sends only the lead's own columns), then upserted from there in one
# statement. COPY is several times cheaper than binding 11 × N parameters, and a shared
# table (unlike a temporary one) lets a file import COPY on one connection while another
# upserts the previous chunk.
_SET_BATCH_SQL = "SELECT set_config('leadrank.stage_batch', %s, false)"
_COPY_STAGE_SQL = f"COPY leads_lead_stage ({', '.join(_STAGE_COLUMNS)}) FROM STDIN"
# Files of past leads (a mapped "converted" column) also stage each lead's outcome.
_COPY_STAGE_OUTCOMES_SQL = f"COPY leads_lead_stage ({', '.join(_STAGE_COLUMNS)}, converted) FROM STDIN"
_CLEAR_BATCH_SQL = "DELETE FROM leads_lead_stage WHERE batch_id = %(batch)s"
# Batches left behind by a process that died between COPY and upsert.
_CLEAR_ABANDONED_SQL = "DELETE FROM leads_lead_stage WHERE staged_at < now() - interval '1 day'"
# Three statements, all under READ COMMITTED: insert what is new (a concurrent insert of
# the same key makes ON CONFLICT wait for it and skip), lock what existed, then update it. The
# update reads the staged values themselves, so "not sent" (NULL) is told apart from any
# value: a field sent empty keeps the stored one (a customer's nightly re-push must not
# wipe what the Contract app set), and engine state (held, closed, attempts, a lead made
# stale after its reschedules) is never touched.
# The existing rows are locked by a statement of their own (_LOCK_EXISTING_SQL, in id order
# so that two batches never deadlock on each other) before the update reads them: a
# statement sees the database as of its start, and an outcome committed while a long update
# ran (a no-answer making the lead stale, with its became_stale event) would reach the
# update through the row lock's recheck with its new lead_type but without its event, and
# the re-push would make the lead live again. Once locked, nothing changes them, so the
# update, started after, sees every write to them, events included.
# Rows the insert just created match their staged values, so the update skips them.
# A staged outcome (st.converted, files of past leads only) stores the lead closed with it,
# as of its created_at: it never enters the queue. On update, it closes a lead that is
# still waiting or ready (now), and replaces the outcome of a lead imported as history; a
# held lead or one the engine closed keeps its state.
_INSERT_SQL = """
INSERT INTO leads_lead AS l (
    customer_id, campaign_id, external_id, lead_type, city, source, last_activity, stage,
    pricing_plan, rescheduled_at, created_at, status, due_at, attempt_count, reschedule_count,
    closed_reason, closed_at, received_at, updated_at, priority_key, sla_deadline, scored_version
)
SELECT st.customer_id, st.campaign_id, st.external_id, st.lead_type, st.city, st.source,
       st.last_activity, st.stage, COALESCE(st.pricing_plan, c.pricing_plan), st.rescheduled_at,
       COALESCE(st.created_at, %(now)s),
       CASE WHEN st.converted IS NOT NULL THEN 'closed' WHEN st.due_at <= %(now)s THEN 'ready'
            ELSE 'waiting' END,
       st.due_at, 0, 0,
       CASE st.converted WHEN true THEN 'past_converted' WHEN false THEN 'past_not_converted' ELSE '' END,
       CASE WHEN st.converted IS NOT NULL THEN COALESCE(st.created_at, %(now)s) END,
       %(now)s, %(now)s, st.priority_key, st.sla_deadline, st.scored_version
FROM leads_lead_stage st JOIN leads_customer c ON c.id = st.customer_id
WHERE st.batch_id = %(batch)s
ORDER BY st.customer_id, st.external_id
ON CONFLICT (customer_id, external_id) DO NOTHING
RETURNING l.id, l.customer_id, l.external_id, (l.created_at AT TIME ZONE 'UTC')::date AS created_day
"""
# A file import's chunk needs no ids back (tens of thousands of rows): the count of leads
# created per customer and day of creation (for the SLA rollups of past days).
_INSERT_COUNT_SQL = f"""
WITH inserted AS ({_INSERT_SQL})
SELECT customer_id, created_day, count(*) FROM inserted GROUP BY 1, 2
"""  # noqa: S608 (constant SQL)

_UPDATE_SQL = """
WITH s AS (
    SELECT st.*, COALESCE(st.created_at, l.created_at) AS new_created_at, l.created_at AS old_created_at,
           -- Once the engine has called the lead, or the Contract app has rescheduled it,
           -- that schedule stands: a push moves rescheduled_at later, never back (a re-push
           -- of the record as first sent would undo a callback, the 22-24 h wait after a
           -- no-answer, or the Contract app's PATCH). The history is read only for a push
           -- that would move it back: COALESCE, because AND goes on past a NULL (no time
           -- sent or stored). A PATCH that withdrew a reschedule (to null) sets no schedule.
           CASE WHEN COALESCE(st.rescheduled_at < l.rescheduled_at, false) AND (
                    l.attempt_count > 0 OR EXISTS (
                        SELECT 1 FROM leads_leadevent e
                        WHERE e.lead_id = l.id AND e.kind = 'updated'
                          AND e.detail ->> 'rescheduled_at' IS NOT NULL
                    ))
                THEN l.rescheduled_at
                ELSE COALESCE(st.rescheduled_at, l.rescheduled_at) END AS new_rescheduled_at,
           l.id AS lead_id, l.campaign_id AS old_campaign_id,
           -- A lead the engine made stale (no answer after its last reschedule) stays stale
           -- when the customer's re-push still says live.
           CASE WHEN l.lead_type = 'stale' AND st.lead_type = 'live' AND EXISTS (
                    SELECT 1 FROM leads_leadevent e WHERE e.lead_id = l.id AND e.kind = 'became_stale'
                ) THEN 'stale' ELSE st.lead_type END AS new_lead_type,
           st.converted IS NOT NULL AND l.status IN ('waiting', 'ready') AS closes,
           CASE WHEN st.converted IS NOT NULL
                     AND (l.status IN ('waiting', 'ready')
                          OR l.closed_reason IN ('past_converted', 'past_not_converted'))
                THEN CASE WHEN st.converted THEN 'past_converted' ELSE 'past_not_converted' END
                ELSE l.closed_reason END AS new_closed_reason
    FROM leads_lead_stage st
    JOIN leads_lead l ON l.customer_id = st.customer_id AND l.external_id = st.external_id
    WHERE st.batch_id = %(batch)s
)
UPDATE leads_lead AS l SET
    campaign_id = s.campaign_id,
    lead_type = s.new_lead_type,
    city = COALESCE(NULLIF(s.city, ''), l.city),
    source = COALESCE(NULLIF(s.source, ''), l.source),
    stage = COALESCE(NULLIF(s.stage, ''), l.stage),
    last_activity = COALESCE(s.last_activity, l.last_activity),
    pricing_plan = COALESCE(s.pricing_plan, l.pricing_plan),
    rescheduled_at = s.new_rescheduled_at,
    created_at = s.new_created_at,
    -- A held lead keeps its call, but is due when the data says: released, it must not be
    -- handed out before the rescheduled_at the customer sent meanwhile.
    due_at = CASE WHEN l.status IN ('waiting', 'ready', 'held')
                  THEN GREATEST(s.new_created_at, s.new_rescheduled_at) ELSE l.due_at END,
    status = CASE WHEN l.status NOT IN ('waiting', 'ready') THEN l.status
                  WHEN s.closes THEN 'closed'
                  WHEN GREATEST(s.new_created_at, s.new_rescheduled_at) <= %(now)s THEN 'ready'
                  ELSE 'waiting' END,
    closed_reason = s.new_closed_reason,
    closed_at = CASE WHEN s.closes THEN %(now)s ELSE l.closed_at END,
    updated_at = %(now)s
FROM s
WHERE l.id = s.lead_id
  AND ((l.campaign_id, l.lead_type, l.city, l.source, l.stage, l.last_activity, l.pricing_plan,
        l.rescheduled_at, l.created_at, l.closed_reason)
       IS DISTINCT FROM
       (s.campaign_id, s.new_lead_type, COALESCE(NULLIF(s.city, ''), l.city),
        COALESCE(NULLIF(s.source, ''), l.source), COALESCE(NULLIF(s.stage, ''), l.stage),
        COALESCE(s.last_activity, l.last_activity), COALESCE(s.pricing_plan, l.pricing_plan),
        s.new_rescheduled_at, s.new_created_at, s.new_closed_reason)
       OR s.closes)
RETURNING l.id, l.customer_id, (l.created_at AT TIME ZONE 'UTC')::date,
          (s.old_created_at AT TIME ZONE 'UTC')::date,
          -- An open lead moved to another campaign with a rescheduled_at it kept: that moment
          -- may fall outside the new campaign's calling hours (see _keep_in_calling_hours).
          CASE WHEN l.campaign_id <> s.old_campaign_id AND l.status <> 'closed'
               THEN l.rescheduled_at END,
          l.campaign_id
"""

# Moves rescheduled_at (and the due time that follows from it) to the campaign's next
# opening, as _UPDATE_SQL derives them; params: now, and rows of (id, opening).
_MOVE_TO_OPENING_SQL = """
UPDATE leads_lead AS l SET
    rescheduled_at = v.opening,
    due_at = GREATEST(l.created_at, v.opening),
    status = CASE WHEN l.status NOT IN ('waiting', 'ready') THEN l.status
                  WHEN GREATEST(l.created_at, v.opening) <= %(now)s THEN 'ready'
                  ELSE 'waiting' END
FROM unnest(%(ids)s::bigint[], %(openings)s::timestamptz[]) AS v(id, opening)
WHERE l.id = v.id
"""

_LOCK_EXISTING_SQL = """
SELECT l.id, l.customer_id, l.external_id FROM leads_lead l
JOIN leads_lead_stage s ON l.customer_id = s.customer_id AND l.external_id = s.external_id
WHERE s.batch_id = %(batch)s
ORDER BY l.id
FOR NO KEY UPDATE OF l
"""
# The same for a file import's chunk, which needs no ids back (tens of thousands of rows).
_LOCK_EXISTING_COUNT_SQL = f"WITH locked AS ({_LOCK_EXISTING_SQL}) SELECT count(*) FROM locked"  # noqa: S608 (constant SQL)


@dataclass(frozen=True, slots=True)
class UpsertResult:
    lead_id: int
    status: UpsertStatus


def _stage_leads(
    cursor: CursorWrapper,
    leads: Sequence[LeadInput],
    *,
    scorer: ArrivalScorer,
    now: dt.datetime,
    outcomes: Sequence[bool] | None = None,
) -> tuple[str, int]:
    """COPY the leads, with their arrival scores (and past outcomes, one per lead, for a
    file of past leads), into the staging table under a new batch id; returns (batch, count).

    When one external id appears twice, only its last occurrence is staged: PostgreSQL's
    ON CONFLICT cannot touch one row twice in a statement, and the last version wins. A
    ``rescheduled_at`` outside the campaign's calling hours is staged at its next opening
    (but a past lead's, which is history).
    """
    last_index: dict[tuple[int, str], int] = {}
    for index, lead in enumerate(leads):
        last_index[(lead.customer_id, lead.external_id)] = index
    scorer.prepare(leads)
    batch = str(uuid.uuid4())
    cursor.execute(_SET_BATCH_SQL, [batch])
    score, in_calling_hours = scorer.score, scorer.in_calling_hours
    positions = range(len(leads)) if len(last_index) == len(leads) else sorted(last_index.values())
    if outcomes is not None:
        # Past leads, stored closed: their rescheduled_at is history, kept as it was.
        with cursor.cursor.copy(_COPY_STAGE_OUTCOMES_SQL) as copy:
            for i in positions:
                copy.write_row((*leads[i], *score(leads[i], now), outcomes[i]))
        return batch, len(last_index)
    with cursor.cursor.copy(_COPY_STAGE_SQL) as copy:
        staged = leads if len(last_index) == len(leads) else [leads[i] for i in positions]
        for lead in staged:
            lead = in_calling_hours(lead)
            copy.write_row(lead + score(lead, now))  # LeadInput is a tuple in _STAGE_COLUMNS order
    return batch, len(last_index)


def upsert_leads(
    leads: Sequence[LeadInput], *, customer_plans: dict[int, str], now: dt.datetime
) -> list[UpsertResult]:
    """Create or update leads by (customer_id, external_id); results in input order.

    ``leads`` must already have passed :meth:`ReferenceCache.check`. An external id that
    appears twice in the batch is stored once (its last version); its first occurrence
    reports the lead's status, later ones ``updated``.
    """
    if not leads:
        return []
    with transaction.atomic(), connection.cursor() as cursor:
        batch, staged = _stage_leads(cursor, leads, scorer=ArrivalScorer(customer_plans), now=now)
        params: dict[str, Any] = {"now": now, "batch": batch}
        cursor.execute(_INSERT_SQL, params)
        inserted = cursor.fetchall()
        written = {(row[1], row[2]): (row[0], True) for row in inserted}
        days = {(row[1], row[3]) for row in inserted}
        if len(written) < staged:
            cursor.execute(_LOCK_EXISTING_SQL, params)
            for lead_id, customer_id, external_id in cursor.fetchall():
                written.setdefault((customer_id, external_id), (lead_id, False))
            days |= _update_staged(cursor, params)
        forget_rollups(cursor, days, now=now)
        cursor.execute(_CLEAR_BATCH_SQL, params)

    seen: set[tuple[int, str]] = set()
    results = []
    for lead in leads:
        key = (lead.customer_id, lead.external_id)
        lead_id, created = written[key]
        status: UpsertStatus = "created" if created and key not in seen else "updated"
        seen.add(key)
        results.append(UpsertResult(lead_id=lead_id, status=status))
    return results


@dataclass(frozen=True)
class StagedBatch:
    """A chunk of an import already COPYed to the staging table, waiting for its upsert."""

    batch: str
    rows: int
    leads: int
    now: dt.datetime  # the moment its leads arrived (defaults and scores were computed at it)


def stage_lead_batch(
    leads: Sequence[LeadInput],
    *,
    rows: int,
    scorer: ArrivalScorer,
    outcomes: Sequence[bool] | None = None,
) -> StagedBatch:
    """COPY a chunk of an import into the staging table (autocommit)."""
    now = timezone.now()
    if not leads:
        return StagedBatch(batch="", rows=rows, leads=0, now=now)
    with connection.cursor() as cursor:
        batch, _ = _stage_leads(cursor, leads, scorer=scorer, now=now, outcomes=outcomes)
    return StagedBatch(batch=batch, rows=rows, leads=len(leads), now=now)


def upsert_staged_batch(staged: StagedBatch) -> tuple[int, int]:
    """Upsert a staged chunk and clear it, in one transaction; returns (created, updated)."""
    if not staged.leads:
        return 0, 0
    params: dict[str, Any] = {"now": staged.now, "batch": staged.batch}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_INSERT_COUNT_SQL, params)
        counts = cursor.fetchall()
        created = sum(count for _, _, count in counts)
        days = {(customer_id, day) for customer_id, day, _ in counts}
        if created < staged.leads:
            cursor.execute(_LOCK_EXISTING_COUNT_SQL, params)
            days |= _update_staged(cursor, params)
        forget_rollups(cursor, days, now=staged.now)
        cursor.execute(_CLEAR_BATCH_SQL, params)
    return created, staged.leads - created


def _update_staged(cursor: CursorWrapper, params: dict[str, Any]) -> set[tuple[int, dt.date]]:
    """Update the staged batch's existing leads (locked by the caller) and rescore those
    that changed; returns the (customer, day of creation) pairs they left or joined."""
    cursor.execute(_UPDATE_SQL, params)
    changed = cursor.fetchall()
    moved = []
    for lead_id, _, _, _, kept_rescheduled_at, campaign_id in changed:
        if kept_rescheduled_at is not None:
            moved.append((lead_id, kept_rescheduled_at, campaign_id))
    _keep_in_calling_hours(cursor, moved, now=params["now"])
    rescore_lead_ids([row[0] for row in changed])
    return {(customer_id, day) for _, customer_id, new, old, *_ in changed for day in (new, old)}


def _keep_in_calling_hours(
    cursor: CursorWrapper, moved: Sequence[tuple[int, dt.datetime, int]], *, now: dt.datetime
) -> None:
    """Leads a re-push moved to another campaign keep their ``rescheduled_at`` (the engine's
    reschedule or callback, or the customer's earlier one): moved to the new campaign's next
    opening when it falls outside its calling hours. ``moved``: (lead, rescheduled_at, campaign)."""
    if not moved:
        return
    hours = calling_hours_of(row[2] for row in moved)
    ids, openings = [], []
    for lead_id, rescheduled_at, campaign_id in moved:
        opening = next_opening(rescheduled_at, hours[campaign_id])
        if opening != rescheduled_at:
            ids.append(lead_id)
            openings.append(opening)
    if ids:
        cursor.execute(_MOVE_TO_OPENING_SQL, {"now": now, "ids": ids, "openings": openings})


# --- Batches from the API -------------------------------------------------------------


@dataclass(frozen=True)
class BatchItemResult:
    index: int
    external_id: str | None
    status: Literal["created", "updated", "rejected"]
    lead_id: int | None = None
    errors: FieldErrors | None = None


def _nul_errors(item: dict[str, object]) -> FieldErrors:
    """PostgreSQL text cannot hold NUL: one such value would fail the batch's whole statement
    (every valid neighbour lost), so it is a field error of its own item."""
    return {
        name: ["Text may not contain NUL (\\x00) characters."]
        for name in LEAD_FIELDS
        if isinstance(value := item.get(name), str) and "\x00" in value
    }


def ingest_lead_batch(
    items: Sequence[object], *, allowed_customer_id: int | None, now: dt.datetime | None = None
) -> list[BatchItemResult]:
    """Validate and store a batch of lead objects; bad items never stop good ones."""
    now = now or timezone.now()
    latest = latest_moment_for(now)
    parsed: list[tuple[int, LeadInput]] = []
    results: dict[int, BatchItemResult] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            results[index] = BatchItemResult(
                index, None, "rejected", errors={"non_field_errors": ["Each lead must be a JSON object."]}
            )
            continue
        lead, errors = parse_lead(item, latest=latest)
        errors = {**errors, **_nul_errors(item)}
        if lead is None or errors:
            external_id = item.get("external_id")
            results[index] = BatchItemResult(
                index, str(external_id) if external_id is not None else None, "rejected", errors=errors
            )
        else:
            parsed.append((index, lead))

    references = ReferenceCache()
    references.load(lead for _, lead in parsed)
    valid: list[tuple[int, LeadInput]] = []
    for index, lead in parsed:
        errors = references.check(lead, allowed_customer_id=allowed_customer_id)
        if errors:
            results[index] = BatchItemResult(index, lead.external_id, "rejected", errors=errors)
        else:
            valid.append((index, lead))

    stored = upsert_leads([lead for _, lead in valid], customer_plans=references.customer_plans, now=now)
    for (index, lead), outcome in zip(valid, stored, strict=True):
        results[index] = BatchItemResult(index, lead.external_id, outcome.status, lead_id=outcome.lead_id)
    metrics.record_import_statuses(source="api", statuses=(result.status for result in results.values()))
    return [results[i] for i in range(len(items))]


# --- Files ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    column: str
    reason: str


class ErrorReport:
    """Collects rejected rows: all of them into a CSV file, the first few in memory."""

    HEADER = ("row", "column", "reason")

    def __init__(self, out: TextIO | None = None, *, keep: int = 200) -> None:
        self._writer = csv.writer(out) if out is not None else None
        if self._writer is not None:
            self._writer.writerow(self.HEADER)
        self.keep = keep
        self.first: list[RowError] = []
        self.rows_rejected = 0

    def add(self, row: int, errors: list[RowError]) -> None:
        self.rows_rejected += 1
        for error in errors:
            if len(self.first) < self.keep:
                self.first.append(error)
            if self._writer is not None:
                self._writer.writerow((error.row, _inert(error.column), _inert(error.reason)))


# A spreadsheet program opening the error report runs a cell that starts with one of these as
# a formula ("CSV injection"), and the report's cells carry the customer's text: its header
# names (a column "=HYPERLINK(…)"). Such a cell gets a leading apostrophe, which the program
# shows as text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(text: str) -> str:
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text


@dataclass
class ImportSummary:
    total: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)


@dataclass
class ParsedChunk:
    leads: list[LeadInput]
    rows: int
    outcomes: list[bool] | None = None  # per lead, for a file of past leads


ProgressCallback = Callable[[int], object]


def open_import(
    path: Path, *, mapping: LeadMapping, customer_id: int | None, campaign_id: int | None
) -> tuple[Table, ColumnPlan]:
    """Open a file and match its header; raises :class:`ImportFileError` for a bad file."""
    table = open_table(path, encoding=mapping.encoding)
    plan = plan_columns(table.header, mapping, given={"customer_id": customer_id, "campaign_id": campaign_id})
    return table, plan


def _parse_chunks(
    table: Table,
    plan: ColumnPlan,
    *,
    empty_values: frozenset[str],
    allowed_customer_id: int | None,
    report: ErrorReport,
    references: ReferenceCache,
    chunk_rows: int,
) -> Iterator[ParsedChunk]:
    # Rows of the current chunk in file order: a parsed lead (and its past outcome, in a
    # file of past leads), or the row's field errors.
    pending: list[tuple[int, LeadInput | None, FieldErrors, bool]] = []
    rows_in_chunk = 0
    with_outcomes = OUTCOME_FIELD in plan.positions or OUTCOME_FIELD in plan.constants
    latest = latest_moment_for(timezone.now())

    def finish() -> ParsedChunk:
        references.load(lead for _, lead, _, _ in pending if lead is not None)
        good: list[LeadInput] = []
        outcomes: list[bool] = []
        for row_number, lead, errors, outcome in pending:
            if lead is not None:
                errors = references.check(lead, allowed_customer_id=allowed_customer_id)
            if errors:
                report.add(row_number, _row_errors(row_number, errors, plan.column_name))
            elif lead is not None:
                good.append(lead)
                outcomes.append(outcome)
        return ParsedChunk(leads=good, rows=rows_in_chunk, outcomes=outcomes if with_outcomes else None)

    seen = 0
    for row_number, cells in table.rows:
        seen += 1
        rows_in_chunk += 1
        raw = row_to_raw(cells, plan, empty_values)
        lead, errors = parse_lead(raw, latest=latest)
        outcome = False
        if with_outcomes:
            try:
                outcome = parse_outcome(raw.get(OUTCOME_FIELD))
            except ValueError as exc:
                lead, errors = None, {**errors, OUTCOME_FIELD: [str(exc)]}
        pending.append((row_number, lead, errors, outcome))
        if rows_in_chunk >= chunk_rows:
            yield finish()
            pending, rows_in_chunk = [], 0
    if seen == 0:
        raise ImportFileError("The file has a header but no data rows.")
    if rows_in_chunk:
        yield finish()


def _row_errors(row_number: int, errors: FieldErrors, column_name: Callable[[str], str]) -> list[RowError]:
    return [
        RowError(row_number, column_name(name), message)
        for name, messages in errors.items()
        for message in messages
    ]


def import_leads(
    path: Path,
    *,
    mapping: LeadMapping,
    customer_id: int | None = None,
    campaign_id: int | None = None,
    allowed_customer_id: int | None = None,
    errors_out: TextIO | None = None,
    on_progress: ProgressCallback | None = None,
    on_opened: Callable[[Table], None] | None = None,
    chunk_rows: int = IMPORT_CHUNK_ROWS,
) -> ImportSummary:
    """Import a whole file: parse, validate, upsert in chunks; returns the counts.
    ``on_opened`` is called with the table once the file is opened and checked, before its
    first row is read (the command sizes its progress bar then).

    Parsing (Python, one core) overlaps with the previous chunk's upsert (PostgreSQL,
    the other core): a writer thread with its own database connection stores chunk N
    while this thread parses chunk N + 1. Each chunk commits on its own, so a failure
    keeps every chunk already stored; re-running the file is harmless (upsert).

    Raises :class:`ImportFileError` when the file cannot be processed at all. The checks
    of the whole file (format, encoding, header) run before the first write, so such a
    file writes nothing; a CSV syntax error met further on stops the import after the
    chunks already committed (re-running the fixed file upserts them again, harmlessly).
    """
    table, plan = open_import(path, mapping=mapping, customer_id=customer_id, campaign_id=campaign_id)
    if on_opened is not None:
        on_opened(table)
    report = ErrorReport(errors_out)
    references = ReferenceCache()
    summary = ImportSummary()
    chunks = _parse_chunks(
        table,
        plan,
        empty_values=mapping.empty_values,
        allowed_customer_id=allowed_customer_id,
        report=report,
        references=references,
        chunk_rows=chunk_rows,
    )

    scorer = ArrivalScorer(references.customer_plans)

    def stage(chunk: ParsedChunk) -> StagedBatch:
        return stage_lead_batch(chunk.leads, rows=chunk.rows, scorer=scorer, outcomes=chunk.outcomes)

    def upsert(staged: StagedBatch) -> None:
        created, updated = upsert_staged_batch(staged)
        metrics.record_import_rows(
            source="file", created=created, updated=updated, rejected=staged.rows - staged.leads
        )
        summary.created += created
        summary.updated += updated
        summary.total += staged.rows
        if on_progress is not None:
            on_progress(staged.rows)

    first = next(chunks)
    with connection.cursor() as cursor:
        cursor.execute(_CLEAR_ABANDONED_SQL)
    second = next(chunks, None)
    if second is None:
        # One chunk: nothing to overlap, store it on this thread's connection.
        upsert(stage(first))
    else:
        _upsert_overlapped(map(stage, itertools.chain([first, second], chunks)), upsert)
    summary.rejected = report.rows_rejected
    summary.errors = report.first
    return summary


def _upsert_overlapped(staged: Iterator[StagedBatch], upsert: Callable[[StagedBatch], None]) -> None:
    """Upsert staged chunks on a writer thread while this thread parses and stages the next.

    The writer only waits on PostgreSQL (the GIL is free meanwhile), so parsing and the
    COPY of chunk N + 1 run on one core while the server upserts chunk N on the other.
    If the writer fails, the chunks it did not reach are removed from the staging table
    and its error is raised here.
    """
    work: queue.Queue[StagedBatch | None] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []
    done: set[str] = set()

    def write_chunks() -> None:
        try:
            while (batch := work.get()) is not None:
                upsert(batch)
                done.add(batch.batch)
        except BaseException as exc:  # re-raised on the parsing thread below
            failure.append(exc)
            while work.get() is not None:  # drain so the parsing thread never blocks
                pass
        finally:
            connection.close()  # the writer thread's own connection

    writer = threading.Thread(target=write_chunks, name="lead-import-writer")
    writer.start()
    sent: list[str] = []
    try:
        for batch in staged:
            sent.append(batch.batch)
            work.put(batch)
            if failure:
                break
    finally:
        work.put(None)
        writer.join()
        leftovers = [batch for batch in sent if batch and batch not in done]
        if leftovers:
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM leads_lead_stage WHERE batch_id = ANY(%s::uuid[])", [leftovers])
    if failure:
        raise failure[0]


@dataclass
class ImportPreview:
    header: list[str]
    file_format: str
    sample: list[LeadInput]
    total_rows: int
    valid_rows: int
    rejected_rows: int
    errors: list[RowError]

    def to_json(self, *, max_reason_chars: int) -> dict[str, Any]:
        """The preview as JSON (kept on an admin import job between its check and the page),
        each error's reason cut to ``max_reason_chars``."""
        return {
            "header": self.header,
            "file_format": self.file_format,
            "sample": [
                [value.isoformat() if isinstance(value, dt.datetime) else value for value in lead]
                for lead in self.sample
            ],
            "total_rows": self.total_rows,
            "valid_rows": self.valid_rows,
            "rejected_rows": self.rejected_rows,
            "errors": [
                [error.row, error.column, Truncator(error.reason).chars(max_reason_chars)]
                for error in self.errors
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ImportPreview":
        return cls(
            header=data["header"],
            file_format=data["file_format"],
            sample=[
                LeadInput._make(
                    dt.datetime.fromisoformat(value) if name in _LEAD_INPUT_MOMENTS and value else value
                    for name, value in zip(LeadInput._fields, values, strict=True)
                )
                for values in data["sample"]
            ],
            total_rows=data["total_rows"],
            valid_rows=data["valid_rows"],
            rejected_rows=data["rejected_rows"],
            errors=[RowError(*error) for error in data["errors"]],
        )


# The LeadInput fields that hold a moment (ISO 8601 text in JSON).
_LEAD_INPUT_MOMENTS = frozenset(
    name for name, kind in LeadInput.__annotations__.items() if dt.datetime in get_args(kind)
)


def preview_import(
    path: Path,
    *,
    mapping: LeadMapping,
    customer_id: int | None = None,
    campaign_id: int | None = None,
    sample_rows: int = 20,
    error_rows: int = 500,
    on_progress: Callable[[int], None] | None = None,
) -> ImportPreview:
    """Validate a whole file without writing: the first rows as they would be stored, and
    the row errors (row, column, reason) found anywhere in it. ``on_progress`` is called
    with the number of rows checked after each chunk."""
    table, plan = open_import(path, mapping=mapping, customer_id=customer_id, campaign_id=campaign_id)
    report = ErrorReport(keep=error_rows)
    sample: list[LeadInput] = []
    total = valid = 0
    for chunk in _parse_chunks(
        table,
        plan,
        empty_values=mapping.empty_values,
        allowed_customer_id=None,
        report=report,
        references=ReferenceCache(),
        chunk_rows=IMPORT_CHUNK_ROWS,
    ):
        total += chunk.rows
        valid += len(chunk.leads)
        if len(sample) < sample_rows:
            sample.extend(chunk.leads[: sample_rows - len(sample)])
        if on_progress is not None:
            on_progress(chunk.rows)
    header = list(table.header)
    while header and not header[-1]:
        header.pop()  # a spreadsheet's padding, shown as a row of "(empty)" names
    return ImportPreview(
        header=header,
        file_format=table.format,
        sample=sample,
        total_rows=total,
        valid_rows=valid,
        rejected_rows=report.rows_rejected,
        errors=report.first,
    )


def estimate_rows(path: Path, table: Table) -> int | None:
    return count_data_rows(path, table.format)


# --- Changes from the Contract app ---------------------------------------------------------


class LeadConflict(Exception):
    """The change does not fit the lead's state (e.g. rescheduling a closed lead)."""


def update_lead(*, lead_id: int, changes: dict[str, object], now: dt.datetime | None = None) -> Lead:
    """Apply a PATCH from the Contract app and keep the queue state consistent with it.

    A new ``rescheduled_at`` makes the lead due at that moment, moved to the campaign's next
    opening when it falls outside its calling hours: it waits until then (or is ready at once
    if the moment has passed). A held lead being rescheduled is released,
    since its call is over. Closed leads keep their data editable but cannot be rescheduled.
    """
    now = now or timezone.now()
    with transaction.atomic():
        # Row lock: a concurrent claim or outcome for this lead waits for this change.
        lead = (
            Lead.objects.select_related("campaign")
            .select_for_update(of=("self",), no_key=True)
            .get(pk=lead_id)
        )
        changed = {}
        for name, value in changes.items():
            if getattr(lead, name) != value:
                changed[name] = value
                setattr(lead, name, value)
        if "rescheduled_at" in changed and lead.rescheduled_at is not None:
            if lead.status == QueueStatus.CLOSED:
                raise LeadConflict("The lead is closed; it cannot be rescheduled.")
            # As the engine's reschedules: outside the campaign's calling hours, the next opening.
            opening = next_opening(lead.rescheduled_at, CallingHours.of(lead.campaign))
            if opening != lead.rescheduled_at:
                changed["requested_rescheduled_at"] = lead.rescheduled_at
                lead.rescheduled_at = changed["rescheduled_at"] = opening
            lead.due_at = max(lead.created_at, lead.rescheduled_at)
            lead.holder = None
            lead.lease_expires_at = None
            lead.claimed_at = None
            lead.status = QueueStatus.READY if lead.due_at <= now else QueueStatus.WAITING
        elif "rescheduled_at" in changed and lead.status != QueueStatus.CLOSED:
            # A reschedule withdrawn: the lead is due from its creation again. A held lead
            # keeps its call, and is due at once if it comes back to the queue (a re-push
            # may have moved its due time to the reschedule now withdrawn); a closed one has
            # no due time that matters.
            lead.due_at = lead.created_at
            if lead.status != QueueStatus.HELD:
                lead.status = QueueStatus.READY if lead.due_at <= now else QueueStatus.WAITING
        if changed:
            if lead.status != QueueStatus.CLOSED:
                version = current_versions([lead.customer_id])[lead.customer_id]
                score_lead(lead, params_for_version(version.pk))
            lead.updated_at = now
            lead.save()
            if "lead_type" in changed:  # a day's live and stale counts
                with connection.cursor() as cursor:
                    forget_rollups(cursor, [(lead.customer_id, utc_day(lead.created_at))], now=now)
            LeadEvent.objects.create(
                lead=lead,
                kind=EventKind.UPDATED,
                at=now,
                detail={name: _jsonable(value) for name, value in changed.items()},
            )
    return lead


def _jsonable(value: object) -> object:
    return value.isoformat() if isinstance(value, dt.datetime) else value

"""The next-lead engine: policies in force, scores, claims, outcomes, leases, rescoring.

Locking rules (every function here follows them):

- The hot paths (claim, outcome) are single statements, each its own short transaction:
  a read, a decision in Python, then a conditional write that checks, in the same
  statement, that what the decision rested on still holds.
- Lead rows are taken with ``SKIP LOCKED`` on the claim path: a lead another claim (or
  a rescoring batch) holds is skipped, never waited for, so no two contractors get one
  lead and no claim waits on another. A contractor holds one lead at a time by a unique
  index (``lead_one_held_per_holder``): of two concurrent requests of one contractor the
  second take fails there and answers with the lead the first one took.
- Outcomes write the lead only if it is still held by the same contractor under the same
  claim and unchanged since it was read; releases, extensions and withdrawals lock the one
  lead row they change (``select_for_update``) and check that the caller holds it.
- Rescoring works in batches of ``RESCORE_BATCH`` rows, one short transaction each, writes
  a row only if it still holds the key the batch read, and only one rescoring runs at a
  time (an advisory lock; a second run returns at once).
"""

import collections
import contextlib
import datetime as dt
import functools
import json
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from django.contrib.auth.models import AnonymousUser, User
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import KombuError

from leads.importers import LeadInput
from leads.models import (
    Campaign,
    CloseReason,
    Disposition,
    EventKind,
    Lead,
    LeadEvent,
    LeadType,
    QueueStatus,
)
from prioritization.calling_hours import CallingHours, next_opening
from prioritization.models import Decision, PolicyVersion, PriorityPolicy, version_values
from prioritization.scoring import (
    Candidate,
    LeadFacts,
    PolicyParams,
    Ranked,
    choose,
    explain,
    priority_key,
    rank,
    score_from_log,
    sla_deadline,
)

logger = logging.getLogger(__name__)

# Rows per rescoring transaction: keeps each batch's row locks well under 250 ms.
RESCORE_BATCH = 2_000
# pg_advisory_lock key of the rescoring pass ("LRRS").
RESCORE_LOCK_KEY = 0x4C525253
MAX_TUPLE_CAMPAIGNS = 50
# A claim whose chosen lead is being taken by another claim re-reads its candidates
# without it, at most this many times. Contractors asking at the same instant all choose
# the same best lead, and each round one of them takes it: the last of n needs n rounds
# (a shift's start, a burst of retries), so this bounds how many ask at once, not luck.
MAX_TAKE_ATTEMPTS = 64
# An outcome whose lead changed between its read and its write reads it again, at most
# this many times.
MAX_OUTCOME_ATTEMPTS = 4


# --- Policies in force ------------------------------------------------------------------

# Versions never change, so what is read of one is kept; a bounded number of them, since
# learned policies add a version per customer at every training.
VERSION_CACHE_SIZE = 4096

# The versions this process has read, least recently used first (versions_by_id). A lock,
# not the GIL alone: a lookup and its move to the end are two steps, and web servers and
# Celery may run requests on threads.
_versions: collections.OrderedDict[int, PolicyVersion] = collections.OrderedDict()
_versions_lock = threading.Lock()


@functools.lru_cache(maxsize=VERSION_CACHE_SIZE)
def params_for_version(version_id: int) -> PolicyParams:
    """PolicyParams of a version (cached: versions are immutable)."""
    return version_by_id(version_id).params()


def _version_in_force_sql(customer: str) -> str:
    """The SQL expression of the policy version in force for the customer whose id is in
    ``customer`` (a column): its own policy's current version, else the default policy's
    (NULL when neither exists). One policy per customer and one default
    (priority_policy_one_per_customer): each lookup is one row of that unique index."""
    policy = "SELECT p.current_version_id FROM prioritization_prioritypolicy p WHERE p.customer_id"
    return f"COALESCE(({policy} = {customer}), ({policy} IS NULL))"


_VERSIONS_IN_FORCE_SQL = f"""
SELECT k.customer_id, {_version_in_force_sql("k.customer_id")}
FROM unnest(%(customers)s::bigint[]) AS k(customer_id)
"""  # noqa: S608 (constant text)


def version_by_id(version_id: int) -> PolicyVersion:
    """A policy version, with its learned model (cached: versions are immutable)."""
    return versions_by_id([version_id])[version_id]


def versions_by_id(version_ids: Iterable[int]) -> dict[int, PolicyVersion]:
    """Policy versions with their learned models, by id; those not kept yet are read in one
    query, however many (the SLA figures name every customer's version, and there may be
    more customers with a policy of their own than the cache holds). Raises
    ``PolicyVersion.DoesNotExist`` when one of them is gone (deleted with its policy)."""
    wanted = set(version_ids)
    with _versions_lock:
        found = {pk: _versions[pk] for pk in wanted if pk in _versions}
        for pk in found:
            _versions.move_to_end(pk)
    missing = wanted - found.keys()
    if not missing:
        return found
    read = PolicyVersion.objects.select_related("learned_model").in_bulk(missing)
    if len(read) < len(missing):
        raise PolicyVersion.DoesNotExist(f"Policy version {min(missing - read.keys())} does not exist.")
    with _versions_lock:
        for pk, version in read.items():
            _versions[pk] = version
            _versions.move_to_end(pk)
        while len(_versions) > VERSION_CACHE_SIZE:
            _versions.popitem(last=False)
    return found | read


# Versions this process found deleted (with their policy, in the admin). Ids are never
# reused, and lru_cache keeps no exceptions: without this, every candidate still keyed under
# a deleted version would cost a query on every claim until rescoring rewrote it.
_gone_versions: set[int] = set()


def existing_params(version_id: int) -> PolicyParams | None:
    """Params of a version, or ``None`` when it was deleted (remembered)."""
    if version_id in _gone_versions:
        return None
    try:
        return params_for_version(version_id)
    except PolicyVersion.DoesNotExist:
        _gone_versions.add(version_id)
        return None


def forget_cached_versions() -> None:
    """Drop what this process keeps of versions: immutable, but deleted with their policy."""
    with _versions_lock:
        _versions.clear()
    params_for_version.cache_clear()


def current_versions(customer_ids: Iterable[int]) -> dict[int, PolicyVersion]:
    """The policy version in force for each customer: its own policy's, else the default's.

    One query (policies change in the admin at any moment, so the mapping is not cached);
    the versions themselves are immutable and cached.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_VERSIONS_IN_FORCE_SQL, {"customers": ids})
        rows = cursor.fetchall()
    if any(version_id is None for _, version_id in rows):
        ensure_default_policy()
        with connection.cursor() as cursor:
            cursor.execute(_VERSIONS_IN_FORCE_SQL, {"customers": ids})
            rows = cursor.fetchall()
    versions = versions_by_id(version_id for _, version_id in rows)
    return {customer_id: versions[version_id] for customer_id, version_id in rows}


DEFAULT_POLICY_NAME = "Default policy"


def ensure_default_policy() -> PolicyVersion:
    """The default policy's current version, created with the built-in defaults if missing
    (a fresh database gets it from a migration; this covers a database emptied since)."""
    with transaction.atomic():
        policy, _ = PriorityPolicy.objects.select_for_update().get_or_create(
            customer=None, defaults={"name": DEFAULT_POLICY_NAME}
        )
        if policy.current_version is None:
            number = (policy.versions.aggregate(models.Max("number"))["number__max"] or 0) + 1
            policy.current_version = PolicyVersion.objects.create(
                policy=policy, number=number, note="Defaults"
            )
            policy.save(update_fields=["current_version"])
    return policy.current_version


def facts_of(lead: Lead) -> LeadFacts:
    return LeadFacts(
        lead_type=lead.lead_type,
        city=lead.city,
        source=lead.source,
        stage=lead.stage,
        pricing_plan=lead.pricing_plan,
        created_at=lead.created_at,
        due_at=lead.due_at,
        last_activity=lead.last_activity,
        first_attempt_at=lead.first_attempt_at,
    )


def score_lead(lead: Lead, params: PolicyParams) -> None:
    """Set the lead's stored key, SLA deadline and scoring version (not saved)."""
    facts = facts_of(lead)
    lead.priority_key = priority_key(facts, params)
    lead.sla_deadline = sla_deadline(facts, params)
    lead.scored_version = params.version_id


# --- Policy changes -------------------------------------------------------------------


def enqueue_rescoring() -> None:
    """Ask a worker to rescore every lead with the new versions.

    A broker that is down must not undo a saved policy: the beat task rescores within a
    minute anyway, so the failure is logged, not raised.
    """
    from prioritization import tasks  # tasks import this module

    try:
        tasks.rescore_leads.delay()
    except (KombuError, OSError):
        logger.exception("Could not enqueue a rescoring after a policy change; beat will rescore.")


class PolicyChangedMeanwhile(Exception):
    """The policy got a new version after the one the caller's edit started from."""

    def __init__(self, current: PolicyVersion | None) -> None:
        super().__init__(
            f"The policy is at version {current.number} now." if current else "The policy has no version now."
        )
        self.current = current


def save_policy_settings(
    *,
    policy: PriorityPolicy,
    values: dict[str, Any],
    note: str,
    user: User | AnonymousUser | None,
    base_version: int | None = None,
) -> PolicyVersion | None:
    """Make ``values`` the policy's settings: a new version when any differs from the
    current one, else nothing. Returns the new version, or ``None`` when nothing changed.

    ``base_version`` is the number of the version the edit started from (an admin form):
    when another save made a newer one since, :class:`PolicyChangedMeanwhile` is raised
    instead of silently undoing that save. ``None`` skips the check. The values are
    validated as the admin validates them (``clean()``: bounds and the learned model's
    customer), else ``ValidationError``.

    The policy row is locked (``FOR UPDATE``) while the base is compared and the next
    number is taken, so of two concurrent saves from one base the second is refused, and
    two saves without a base get versions n+1 and n+2 instead of a duplicate-number error.
    The rescoring is enqueued on commit: a worker must see the new version.
    """
    with transaction.atomic():
        locked = (
            PriorityPolicy.objects.select_for_update(of=("self",))
            .select_related("current_version")
            .get(pk=policy.pk)
        )
        current = locked.current_version
        if base_version is not None and (current.number if current else None) != base_version:
            raise PolicyChangedMeanwhile(current)
        if current is not None and version_values(current) == values:
            return None
        number = (locked.versions.aggregate(models.Max("number"))["number__max"] or 0) + 1
        version = PolicyVersion(
            policy=locked,
            number=number,
            created_at=timezone.now(),
            created_by=user if user is not None and user.is_authenticated else None,
            note=note,
            **values,
        )
        version.clean()
        version.save(force_insert=True)
        PriorityPolicy.objects.filter(pk=policy.pk).update(current_version=version)
        policy.current_version = version
        transaction.on_commit(enqueue_rescoring)
    return version


# --- Claims -----------------------------------------------------------------------------


class ClaimRefused(Exception):
    """The contractor may not claim now; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int, retry_after: dt.datetime | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Claim:
    lead: Lead
    decision: Decision
    repeated: bool  # the contractor already held this lead (a retried request)


CANDIDATE_COLUMNS = (
    "id, lead_type, priority_key, sla_deadline, first_attempt_at, scored_version, "
    "city, source, stage, pricing_plan, created_at, due_at, last_activity, campaign_id"
)

# Leads that became due (reschedules, callbacks) and leads whose lease ran out return to
# the claim index now, for the campaigns asked about: nothing waits for a beat task. One
# equality lookup per campaign (lead_waiting_due, lead_held_lease): `campaign_id =
# ANY(...)` lets the planner pick another index and filter every held lead. A claim also
# frees its own contractor's expired lead, whatever its campaign (lead_one_held_per_holder:
# a contractor may hold one lead, and an expired one must not stop the next). Lookups by
# holder do not state status = 'held' (a holder implies it), so that no plan can read them
# from lead_held_lease, nor the per-campaign ones from the holder index. The woken rows
# come back with the candidate columns: a statement reads the snapshot it started with, in
# which they were not ready yet. Shared by the claim and the beat task (which passes no
# contractor and all campaigns).
_WAKE_CTES = f"""
due AS (
    SELECT l.id FROM unnest(%(campaigns)s::bigint[]) AS c(campaign_id)
    CROSS JOIN LATERAL (
        SELECT id FROM leads_lead
        WHERE campaign_id = c.campaign_id AND status = 'waiting' AND due_at <= %(now)s
        FOR NO KEY UPDATE SKIP LOCKED
    ) l
), expired AS (
    SELECT l.id, l.holder_id FROM unnest(%(campaigns)s::bigint[]) AS c(campaign_id)
    CROSS JOIN LATERAL (
        SELECT id, holder_id FROM leads_lead
        WHERE campaign_id = c.campaign_id AND status = 'held' AND lease_expires_at <= %(now)s
        ORDER BY lease_expires_at
        FOR NO KEY UPDATE SKIP LOCKED
    ) l
    UNION
    SELECT * FROM (
        SELECT id, holder_id FROM leads_lead
        WHERE holder_id = %(contractor)s AND lease_expires_at <= %(now)s
        FOR NO KEY UPDATE SKIP LOCKED
    ) own
), woken AS (
    UPDATE leads_lead l
    SET status = CASE WHEN l.due_at <= %(now)s THEN 'ready' ELSE 'waiting' END,
        holder_id = NULL, lease_expires_at = NULL, claimed_at = NULL
    WHERE l.id IN (SELECT id FROM due UNION ALL SELECT id FROM expired)
    RETURNING {CANDIDATE_COLUMNS}
), logged AS (
    INSERT INTO leads_leadevent (lead_id, kind, at, contractor_id, disposition, idempotency_key, detail)
    SELECT id, 'lease_expired', %(now)s, holder_id, '', '', '{{}}' FROM expired
)"""  # noqa: S608 (constant column list)

_WAKE_SQL = f"WITH {_WAKE_CTES} SELECT count(*) FROM woken"  # noqa: S608 (constant text)

# Everything a claim decides on, in one statement (no row locks but the wake's): the
# contractor (active, claims so far, which of the campaigns it is qualified for, the lead
# it holds), the policy version in force for each campaign's customer (each campaign looked up
# once by its key: a join, or an EXISTS the planner turns into one, may scan the campaign
# table; OFFSET 0 keeps the lateral lookup from being flattened into such a join), and the
# candidates.
# One row per candidate with the contractor's and the versions' columns repeated, or one
# row with NULL candidate columns when there is none; no row for an unknown contractor.
#
# Candidates: per active campaign of the tuple (an inactive campaign is paused: its leads
# wait, and are handed out again once it is active), three index lookups of one row each:
# the best live lead, the best stale lead (both on lead_claim_ready, by stored key) and the
# never-called live lead with the nearest SLA deadline still ahead (lead_claim_sla); plus
# the leads just woken. Python drops those of campaigns outside their calling hours (read
# with the campaigns: the hours are a time zone's wall clock, worked out in
# prioritization.calling_hours) and compares the rest at the instant. They are read, not
# locked: the take locks the chosen lead with SKIP LOCKED and re-checks it is still ready;
# a lead another claim took meanwhile is excluded and the candidates are read again.
_CLAIM_READ_SQL = f"""
WITH {_WAKE_CTES}, me AS MATERIALIZED (
    SELECT c.active, c.claims_made,
           ARRAY(SELECT q.campaign_id FROM leads_contractor_campaigns q
                 WHERE q.contractor_id = c.id AND q.campaign_id = ANY(%(campaigns)s::bigint[])) AS qualified,
           (SELECT l.id FROM leads_lead l
            WHERE l.holder_id = c.id AND l.lease_expires_at > %(now)s) AS held
    FROM leads_contractor c WHERE c.id = %(contractor)s
), owners AS MATERIALIZED (
    SELECT k.campaign_id, cp.*
    FROM unnest(%(campaigns)s::bigint[]) AS k(campaign_id)
    LEFT JOIN LATERAL (
        SELECT customer_id, active, ARRAY[time_zone, calling_hours_start::text, calling_hours_end::text,
                                          array_to_string(calling_days, ',')] AS hours
        FROM leads_campaign WHERE id = k.campaign_id OFFSET 0
    ) cp ON true
), versions AS (
    SELECT array_agg(o.campaign_id ORDER BY o.campaign_id) AS campaign_ids,
           array_agg({_version_in_force_sql("o.customer_id")} ORDER BY o.campaign_id) AS version_ids,
           array_agg(o.hours ORDER BY o.campaign_id) AS hours
    FROM owners o WHERE o.customer_id IS NOT NULL
), found AS (
    SELECT {CANDIDATE_COLUMNS}
    FROM (SELECT campaign_id AS active_id FROM owners WHERE active) c
    CROSS JOIN LATERAL (
        SELECT * FROM (
            SELECT * FROM leads_lead
            WHERE campaign_id = c.active_id AND status = 'ready' AND lead_type = 'live'
              AND id <> ALL(%(excluded)s::bigint[])
            ORDER BY priority_key DESC NULLS LAST, id LIMIT 1
        ) live
        UNION ALL
        SELECT * FROM (
            SELECT * FROM leads_lead
            WHERE campaign_id = c.active_id AND status = 'ready' AND lead_type = 'stale'
              AND id <> ALL(%(excluded)s::bigint[])
            ORDER BY priority_key DESC NULLS LAST, id LIMIT 1
        ) stale
        UNION ALL
        SELECT * FROM (
            SELECT * FROM leads_lead
            WHERE campaign_id = c.active_id AND status = 'ready' AND lead_type = 'live'
              AND first_attempt_at IS NULL AND sla_deadline > %(now)s
              AND id <> ALL(%(excluded)s::bigint[])
            ORDER BY sla_deadline, id LIMIT 1
        ) at_risk
    ) x
    UNION ALL
    SELECT {CANDIDATE_COLUMNS} FROM woken
    WHERE campaign_id IN (SELECT campaign_id FROM owners WHERE active) AND id <> ALL(%(excluded)s::bigint[])
      AND due_at <= %(now)s
)
SELECT me.active, me.claims_made, me.qualified, me.held, versions.campaign_ids, versions.version_ids,
       versions.hours, found.*
FROM me CROSS JOIN versions LEFT JOIN found ON true
"""  # noqa: S608 (constant column list)
# psycopg converts a statement's placeholders once and caches the result, for statements
# up to 4 KiB; this one is longer with its indentation. Lines stay lines, so that a "--"
# comment added one day ends with its line.
_CLAIM_READ_SQL = "\n".join(line.strip() for line in _CLAIM_READ_SQL.splitlines() if line.strip())
# Columns of the claim read's rows before the candidate's (CANDIDATE_COLUMNS).
_CLAIM_HEAD = 7


# The lead's row as statements return it, and the attribute names Lead.from_db() takes.
_LEAD_COLUMNS = [field.column for field in Lead._meta.concrete_fields]
_LEAD_ATTNAMES = [field.attname for field in Lead._meta.concrete_fields]

# Takes the chosen lead if it is still ready and nobody is taking it (SKIP LOCKED), counts
# the contractor's claim and logs the decision; returns the decision's id and the lead's
# row as the UPDATE left it, or nothing when the lead was gone. A second lead for the same
# contractor fails on lead_one_held_per_holder.
_TAKE_SQL = f"""
WITH taken AS (
    UPDATE leads_lead
    SET status = 'held', holder_id = %(contractor)s, lease_expires_at = %(lease)s,
        claimed_at = %(now)s, updated_at = %(now)s
    WHERE id = (
        SELECT id FROM leads_lead
        WHERE id = %(lead)s AND status = 'ready' AND campaign_id = ANY(%(campaigns)s::bigint[])
        FOR NO KEY UPDATE SKIP LOCKED
    )
    RETURNING *
), logged AS (
    INSERT INTO leads_leadevent (lead_id, kind, at, contractor_id, disposition, idempotency_key, detail)
    SELECT id, 'claimed', %(now)s, %(contractor)s, '', '', '{{}}' FROM taken
), counted AS (
    UPDATE leads_contractor SET claims_made = claims_made + 1
    WHERE id = %(contractor)s AND EXISTS (SELECT 1 FROM taken)
), decided AS (
    INSERT INTO prioritization_decision (
        lead_id, contractor_id, campaign_ids, decided_at, policy_version_id, band, score, log_score,
        priority_key, reasons, lease_expires_at
    )
    SELECT id, %(contractor)s, %(campaigns)s, %(now)s, %(version)s, %(band)s, %(score)s, %(log_score)s,
           %(key)s, %(reasons)s, %(lease)s
    FROM taken
    RETURNING id
)
SELECT decided.id, {", ".join(f"taken.{c}" for c in _LEAD_COLUMNS)}
FROM decided, taken
"""  # noqa: S608 (column names from the model, no input)
_CLAIMS_SINCE_SQL = """
SELECT count(*) FILTER (WHERE decided_at > %(hour)s), count(*)
FROM prioritization_decision WHERE contractor_id = %(contractor)s AND decided_at > %(day)s
"""
ONE_HELD_PER_HOLDER = "lead_one_held_per_holder"


def _no_nan(value: float) -> float:
    return value if math.isfinite(value) else -1e300


def statement_cursor() -> psycopg.Cursor[Any]:
    """A cursor for the engine's hot statements, on Django's connection (so inside its
    transactions when there is one): server-side parameter binding, so that
    ``execute(..., prepare=True)`` plans each statement once per connection instead of once
    per request (settings allow explicit preparation; see ``DATABASES``).

    Django's own cursors bind parameters on the client and never prepare; on the claim
    path planning cost more than executing. Statements run here are not seen by Django's
    query logging (``connection.queries``, ``django_assert_num_queries``).
    """
    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


@contextlib.contextmanager
def _one_statement() -> Iterator[None]:
    """The scope of one engine statement on Django's connection: errors come out as
    Django's. Outside a transaction the statement commits alone (autocommit): the engine's
    hot paths are single statements, which spares BEGIN and COMMIT their round trips.
    Inside an atomic block (tests, callers composing operations) a failing statement rolls
    back only itself (a savepoint), as an ORM query inside ``atomic()`` would have to be
    handled."""
    savepoint = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
    with connection.wrap_database_errors, savepoint:
        yield


def run_statement(query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """One prepared statement (see :func:`_one_statement`), its rows fetched."""
    with _one_statement():
        return _execute(query, params)


def _execute(query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    with statement_cursor() as cursor:
        cursor.execute(query, params, prepare=True, binary=True)
        return cursor.fetchall()


class _NoDefaultPolicy(Exception):
    """Raised when no policy is in force: the default policy is created (a migration makes
    it; this covers a database without) and the operation runs again."""


def claim_next_lead(
    *, contractor_id: int, campaign_ids: Sequence[int], now: dt.datetime | None = None
) -> Claim | None:
    """Hand the best lead of the campaigns to the contractor; ``None`` when none is eligible.

    Two statements, each its own short transaction: (1) read what the contractor holds,
    the policy versions in force and the few candidates, waking due and expired leads of
    these campaigns on the way; choose at ``now`` with :func:`prioritization.scoring.choose`;
    (2) take the chosen lead with a conditional UPDATE (SKIP LOCKED, still ready) that also
    logs the decision and returns the lead's row. When another claim took the chosen lead
    in between, the claim runs again without it. When another request of the same
    contractor took a lead in between (lead_one_held_per_holder), that lead is the answer.

    Raises :class:`ClaimRefused` for an unknown, inactive, unqualified or capped contractor,
    and (503) when every lead it chose, :data:`MAX_TAKE_ATTEMPTS` times, went to another.
    """
    now = now or timezone.now()
    campaigns = sorted(set(campaign_ids))
    excluded: list[int] = []
    for _ in range(MAX_TAKE_ATTEMPTS):
        try:
            result = _claim_once(contractor_id=contractor_id, campaigns=campaigns, now=now, excluded=excluded)
        except _NoDefaultPolicy:
            ensure_default_policy()
            continue
        if not isinstance(result, int):
            return result
        held = _held_claim_now(contractor_id, now)
        if held is not None:  # another request of this contractor took a lead meanwhile
            return held
        if result:
            excluded.append(result)
    # Every attempt lost its lead to another claim. Not "nothing to call" (204): leads are
    # there, and the Contract app is told to ask again in a moment.
    logger.warning(
        "Claim for contractor %s gave up after %s contested leads", contractor_id, MAX_TAKE_ATTEMPTS
    )
    raise ClaimRefused(
        f"Each of the {MAX_TAKE_ATTEMPTS} leads this request chose was taken by another contractor "
        "meanwhile; ask again.",
        status=503,
        retry_after=now + dt.timedelta(seconds=1),
    )


def _claim_once(
    *, contractor_id: int, campaigns: list[int], now: dt.datetime, excluded: list[int]
) -> Claim | int | None:
    """One read and one take: the claim, ``None`` when nothing is eligible, or the id of the
    chosen lead when the take lost it (0 when this contractor's other request took one)."""
    rows = run_statement(
        _CLAIM_READ_SQL,
        {"contractor": contractor_id, "campaigns": campaigns, "now": now, "excluded": excluded},
    )
    if not rows:
        raise ClaimRefused(f"Unknown contractor {contractor_id}.", status=404)
    active, claims_made, qualified, held_id, version_campaigns, version_ids, hours = rows[0][:_CLAIM_HEAD]
    if not active:
        raise ClaimRefused(f"Contractor {contractor_id} is inactive.", status=403)
    missing = sorted(set(campaigns) - set(qualified))
    if missing:
        raise ClaimRefused(
            f"Contractor {contractor_id} is not qualified for campaign(s) {', '.join(map(str, missing))}.",
            status=403,
        )
    if held_id is not None:
        repeated = _held_claim(held_id, contractor_id)
        if repeated is not None:
            return repeated

    versions = _versions_of_campaigns(version_campaigns or [], version_ids or [])
    _check_caps(contractor_id=contractor_id, versions=versions.values(), now=now)
    stale_every = max((v.stale_every for v in versions.values()), default=0)
    closed = _closed_campaigns(version_campaigns or [], hours, now=now)
    candidates, facts = candidates_from_rows(
        [row[_CLAIM_HEAD:] for row in rows if row[_CLAIM_HEAD] is not None and row[-1] not in closed],
        versions,
    )
    chosen = choose(candidates, now=now, claims_so_far=claims_made, stale_every=stale_every)
    if chosen is None:
        return None
    return _take(
        chosen,
        facts[chosen.candidate.lead_id],
        contractor_id=contractor_id,
        campaigns=campaigns,
        now=now,
    )


def _closed_campaigns(
    campaign_ids: list[int], hours: list[list[str]] | None, *, now: dt.datetime
) -> set[int]:
    """The campaigns of a claim outside their calling hours at ``now``: their leads wait
    (calls happen inside each campaign's calling hours, in its time zone), as a paused
    campaign's do, and the tuple's open campaigns are served meanwhile. ``hours``: each
    campaign's time zone, start, end and calling days, as the claim read spells them."""
    return {
        campaign_id
        for campaign_id, spelled in zip(campaign_ids, hours or [], strict=True)
        if not _calling_hours(*spelled).is_open(now)
    }


@functools.lru_cache(maxsize=1024)
def _calling_hours(time_zone: str, start: str, end: str, days: str) -> CallingHours:
    """Calling hours as the claim read spells them (kept: campaigns change their hours seldom)."""
    weekdays = frozenset(int(day) for day in days.split(","))
    return CallingHours(time_zone, dt.time.fromisoformat(start), dt.time.fromisoformat(end), weekdays)


def candidates_from_rows(
    rows: list[tuple[Any, ...]], versions: dict[int, PolicyVersion]
) -> tuple[list[Candidate], dict[int, LeadFacts]]:
    """Rows of :data:`CANDIDATE_COLUMNS` as the claim ranks them, each under the version it
    was keyed with, else its campaign's version in ``versions`` (see :func:`_scored_params`);
    and each lead's facts, from which a draft policy keys it again (the admin's preview)."""
    candidates = []
    facts: dict[int, LeadFacts] = {}
    for row in rows:
        lead_id, lead_type, key, deadline, first_attempt_at, version = row[:6]
        city, source, stage, plan, created_at, due_at, last_activity, campaign_id = row[6:]
        facts[lead_id] = LeadFacts(
            lead_type, city, source, stage, plan, created_at, due_at, last_activity, first_attempt_at
        )
        candidates.append(
            Candidate(
                lead_id=lead_id,
                lead_type=lead_type,
                key=_no_nan(key) if key is not None else -1e300,
                deadline=deadline,
                first_attempt_at=first_attempt_at,
                policy=_scored_params(version, versions[campaign_id]),
            )
        )
    return candidates, facts


def _scored_params(version_id: int | None, in_force: PolicyVersion) -> PolicyParams:
    """Params of the version a lead was keyed under; when there is none (never scored) or it
    is gone (its policy was deleted in the admin, which takes the versions along while the
    rescoring it enqueued has not run yet), a version in force."""
    return (existing_params(version_id) if version_id else None) or params_for_version(in_force.pk)


def _held_claim_now(contractor_id: int, now: dt.datetime) -> Claim | None:
    lead = Lead.objects.filter(holder_id=contractor_id, lease_expires_at__gt=now).first()
    return _held_claim(lead.pk, contractor_id) if lead is not None else None


def _held_claim(lead_id: int, contractor_id: int) -> Claim | None:
    """The claim of the lead the contractor already holds (a retried request)."""
    decision = Decision.objects.filter(lead_id=lead_id, contractor_id=contractor_id).first()
    if decision is None:
        return None
    return Claim(lead=Lead.objects.get(pk=lead_id), decision=decision, repeated=True)


def _versions_of_campaigns(
    campaign_ids: list[int], version_ids: list[int | None]
) -> dict[int, PolicyVersion]:
    """The policy version in force for each campaign's customer."""
    known = [version_id for version_id in version_ids if version_id is not None]
    if len(known) < len(version_ids):
        raise _NoDefaultPolicy
    versions = versions_by_id(known)
    return {
        campaign_id: versions[version_id] for campaign_id, version_id in zip(campaign_ids, known, strict=True)
    }


def _check_caps(*, contractor_id: int, versions: Iterable[PolicyVersion], now: dt.datetime) -> None:
    hourly = [v.claims_per_hour_cap for v in versions if v.claims_per_hour_cap is not None]
    daily = [v.claims_per_day_cap for v in versions if v.claims_per_day_cap is not None]
    if not hourly and not daily:
        return
    # Over a cap: 429 with the moment the oldest counted claim leaves its window. Over both,
    # the later of the two moments: at the earlier one the other cap still refuses.
    hour, day = now - dt.timedelta(hours=1), now - dt.timedelta(days=1)
    refusals: list[tuple[dt.datetime, str]] = []
    with connection.cursor() as cursor:
        cursor.execute(_CLAIMS_SINCE_SQL, {"contractor": contractor_id, "hour": hour, "day": day})
        last_hour, last_day = cursor.fetchone()
        for cap, used, window in (
            (min(hourly, default=None), last_hour, hour),
            (min(daily, default=None), last_day, day),
        ):
            if cap is not None and used >= cap:
                cursor.execute(
                    "SELECT decided_at FROM prioritization_decision "
                    "WHERE contractor_id = %s AND decided_at > %s "
                    "ORDER BY decided_at DESC OFFSET %s LIMIT 1",
                    [contractor_id, window, cap - 1],
                )
                oldest_counted = cursor.fetchone()
                retry = (oldest_counted[0] if oldest_counted else now) + (now - window)
                refusals.append(
                    (
                        retry,
                        f"Contractor {contractor_id} reached the cap of {cap} claims per "
                        f"{'hour' if window == hour else 'day'}.",
                    )
                )
    if refusals:
        retry, message = max(refusals)
        raise ClaimRefused(message, status=429, retry_after=retry)


def _take(
    chosen: Ranked,
    facts: LeadFacts,
    *,
    contractor_id: int,
    campaigns: list[int],
    now: dt.datetime,
) -> Claim | int:
    """Take the chosen lead and log the decision in one statement: the claim, the lead's id
    when another claim took it first, or 0 when the claim must run again (this
    contractor's other request took a lead first; a cached version was gone)."""
    # Every candidate is scored with a stored version (_scored_params): the lead's own, else
    # the one in force for its customer.
    params = chosen.candidate.policy
    version = version_by_id(params.version_id)
    lease = now + dt.timedelta(seconds=version.lease_seconds)
    score = score_from_log(chosen.log_score)
    decision = Decision(
        lead_id=chosen.candidate.lead_id,
        contractor_id=contractor_id,
        campaign_ids=campaigns,
        decided_at=now,
        policy_version_id=version.pk,
        band=chosen.band.name.lower(),
        score=score,
        log_score=_no_nan(chosen.log_score),
        priority_key=chosen.candidate.key,
        reasons=explain(facts, params, now=now, band=chosen.band),
        lease_expires_at=lease,
    )
    try:
        rows = run_statement(
            _TAKE_SQL,
            {
                "contractor": contractor_id,
                "lease": lease,
                "now": now,
                "lead": decision.lead_id,
                "campaigns": campaigns,
                "version": decision.policy_version_id,
                "band": decision.band,
                "score": score,
                "log_score": decision.log_score,
                "key": decision.priority_key,
                "reasons": json.dumps(decision.reasons),
            },
        )
    except IntegrityError as error:
        if _violated_constraint(error) == ONE_HELD_PER_HOLDER:
            return 0
        if isinstance(error.__cause__, psycopg.errors.ForeignKeyViolation):
            # The decision names a version this process had cached that is gone since (its
            # policy was deleted in the admin, taking its versions along, while its leads
            # still carry it until rescoring): forget the cached versions and run again,
            # which keys such leads under a version in force (_scored_params). A contractor
            # deleted meanwhile is answered by that run's read.
            forget_cached_versions()
            return 0
        raise
    if not rows:
        return decision.lead_id
    decision.pk, *lead_values = rows[0]
    lead = Lead.from_db(connection.alias, _LEAD_ATTNAMES, lead_values)
    return Claim(lead=lead, decision=decision, repeated=False)


def _violated_constraint(error: IntegrityError) -> str | None:
    cause = error.__cause__
    return cause.diag.constraint_name if isinstance(cause, psycopg.Error) else None


# --- Holding, releasing, withdrawing ------------------------------------------------------


class LeadStateConflict(Exception):
    """The lead is not in a state that allows this (answered with 409)."""


def _locked_lead(lead_id: int) -> Lead:
    return Lead.objects.select_for_update(of=("self",), no_key=True).get(pk=lead_id)


def _require_holder(lead: Lead, contractor_id: int) -> None:
    if lead.status == QueueStatus.CLOSED:
        raise LeadStateConflict(f"Lead {lead.pk} is closed ({lead.closed_reason}).")
    if lead.status != QueueStatus.HELD or lead.holder_id != contractor_id:
        raise LeadStateConflict(f"Contractor {contractor_id} does not hold lead {lead.pk}.")


def release_lead(*, lead_id: int, contractor_id: int, now: dt.datetime | None = None) -> Lead:
    """Give a held lead back without an outcome: it is claimable again at once."""
    now = now or timezone.now()
    with transaction.atomic():
        lead = _locked_lead(lead_id)
        _require_holder(lead, contractor_id)
        _requeue(lead, now)
        lead.save()
        LeadEvent.objects.create(lead=lead, kind=EventKind.RELEASED, at=now, contractor_id=contractor_id)
    return lead


def extend_lease(*, lead_id: int, contractor_id: int, now: dt.datetime | None = None) -> Lead:
    """Give the holder a fresh lease (the policy's lease length from now), while the one it
    holds runs: a lease that ran out has put the lead back in the queue, even before a claim
    or the beat task has returned it there. An extension never ends a lease sooner (a
    policy whose lease was shortened since the claim)."""
    now = now or timezone.now()
    with transaction.atomic():
        lead = _locked_lead(lead_id)
        _require_holder(lead, contractor_id)
        if lead.lease_expires_at is not None and lead.lease_expires_at <= now:
            raise LeadStateConflict(
                f"The lease of lead {lead.pk} ran out at {lead.lease_expires_at.isoformat()}; "
                "ask for the next lead."
            )
        version = current_versions([lead.customer_id])[lead.customer_id]
        fresh = now + dt.timedelta(seconds=version.lease_seconds)
        lease = max(lead.lease_expires_at or fresh, fresh)
        lead.lease_expires_at = lease
        lead.updated_at = now
        lead.save(update_fields=["lease_expires_at", "updated_at"])
        LeadEvent.objects.create(
            lead=lead,
            kind=EventKind.LEASE_EXTENDED,
            at=now,
            contractor_id=contractor_id,
            detail={"lease_expires_at": lease.isoformat()},
        )
    return lead


def withdraw_lead(*, lead_id: int, now: dt.datetime | None = None) -> Lead:
    """The customer takes the lead back: closed, never handed out again (idempotent)."""
    now = now or timezone.now()
    with transaction.atomic():
        lead = _locked_lead(lead_id)
        if lead.status == QueueStatus.CLOSED:
            return lead
        _close(lead, CloseReason.WITHDRAWN, now)
        lead.save()
        LeadEvent.objects.create(lead=lead, kind=EventKind.WITHDRAWN, at=now)
    return lead


def _requeue(lead: Lead, now: dt.datetime) -> None:
    lead.holder = None
    lead.lease_expires_at = None
    lead.claimed_at = None
    lead.status = QueueStatus.READY if lead.due_at <= now else QueueStatus.WAITING
    lead.updated_at = now


def _close(lead: Lead, reason: str, now: dt.datetime) -> None:
    lead.holder = None
    lead.lease_expires_at = None
    lead.claimed_at = None
    lead.status = QueueStatus.CLOSED
    lead.closed_reason = reason
    lead.closed_at = now
    lead.updated_at = now


# --- Outcomes -----------------------------------------------------------------------------

_CLOSING = {
    Disposition.CONVERTED: CloseReason.CONVERTED,
    Disposition.NOT_INTERESTED: CloseReason.NOT_INTERESTED,
    Disposition.WRONG_NUMBER: CloseReason.WRONG_NUMBER,
    Disposition.DO_NOT_CALL: CloseReason.DO_NOT_CALL,
}
_NO_CONTACT = {Disposition.NO_ANSWER, Disposition.BUSY}


@dataclass(frozen=True)
class OutcomeResult:
    lead: Lead
    repeated: bool  # the same outcome had already been recorded: nothing changed


def record_outcome(
    *,
    lead_id: int,
    contractor_id: int,
    disposition: str,
    callback_at: dt.datetime | None = None,
    idempotency_key: str = "",
    now: dt.datetime | None = None,
    rng: random.Random | None = None,
) -> OutcomeResult:
    """Record a call attempt by the contractor holding the lead and move the lead on.

    - no answer / busy: a live lead is rescheduled a random moment inside the policy's
      window (22 to 24 h) later, moved to the campaign's next calling hours, at most
      ``reschedule_limit`` times; the next no-answer makes it stale (ready at once). A
      stale lead is rescheduled the same way, without a limit.
    - callback: due again at ``callback_at`` (moved into calling hours).
    - converted, not interested, wrong number, do not call: closed.

    The same outcome reported again (same idempotency key, or without a key the same
    disposition by the same contractor right after) changes nothing; another outcome under
    a key already used (disposition, callback time or contractor) is a conflict. An outcome
    from a contractor who does not hold the lead, or for a closed lead, is a conflict.
    """
    now = now or timezone.now()
    rng = rng or random.Random()
    arguments: dict[str, Any] = {
        "lead_id": lead_id,
        "contractor_id": contractor_id,
        "disposition": disposition,
        "callback_at": callback_at,
        "idempotency_key": idempotency_key,
        "now": now,
        "rng": rng,
    }
    try:
        return _record_outcome(**arguments)
    except _NoDefaultPolicy:
        ensure_default_policy()
    return _record_outcome(**arguments)


def _record_outcome(
    *,
    lead_id: int,
    contractor_id: int,
    disposition: str,
    callback_at: dt.datetime | None,
    idempotency_key: str,
    now: dt.datetime,
    rng: random.Random,
) -> OutcomeResult:
    # Two statements, no explicit transaction: read the lead, decide in Python, write it
    # back only if it is still held by this contractor under the same claim and unchanged
    # since the read (a conditional UPDATE: a concurrent change in between, such as the same
    # outcome sent twice or a PATCH, sends this round back to the read, which then sees what
    # that change did).
    for _ in range(MAX_OUTCOME_ATTEMPTS):
        lead, row_version, hours, version_id, seen = _read_for_outcome(lead_id, idempotency_key)
        if seen is not None and not seen.matches(
            contractor_id=contractor_id, disposition=disposition, callback_at=callback_at
        ):
            # The key names another outcome: answering "done" would tell this sender that
            # an outcome was recorded which never was (another disposition or callback time,
            # or another contractor, who may not even hold the lead).
            raise LeadStateConflict(
                f"Idempotency key {idempotency_key!r} of lead {lead_id} was used for another "
                f"outcome ({seen}); a new attempt needs a new key."
            )
        if seen is not None or (
            not idempotency_key
            and _repeated_without_key(lead, contractor_id=contractor_id, disposition=disposition)
        ):
            return OutcomeResult(lead=lead, repeated=True)
        _require_holder(lead, contractor_id)
        if disposition == Disposition.CALLBACK and callback_at is None:
            raise ValueError("callback_at is required for a callback.")
        if version_id is None:
            raise _NoDefaultPolicy
        claimed_at = lead.claimed_at
        events = _apply_outcome(
            lead,
            version=version_by_id(version_id),
            hours=hours,
            contractor_id=contractor_id,
            disposition=disposition,
            callback_at=callback_at,
            idempotency_key=idempotency_key,
            now=now,
            rng=rng,
        )
        if _save_outcome(lead, events, now, holder_id=contractor_id, claimed_at=claimed_at, row=row_version):
            return OutcomeResult(lead=lead, repeated=False)
    raise LeadStateConflict(f"Lead {lead_id} kept changing while its outcome was recorded; send it again.")


# A lead event an outcome writes: kind, contractor, disposition, idempotency key, detail.
_OutcomeEvent = tuple[str, int | None, str, str, dict[str, Any]]


def _apply_outcome(
    lead: Lead,
    *,
    version: PolicyVersion,
    hours: CallingHours,
    contractor_id: int,
    disposition: str,
    callback_at: dt.datetime | None,
    idempotency_key: str,
    now: dt.datetime,
    rng: random.Random,
) -> list[_OutcomeEvent]:
    """Move the lead on after the attempt (not saved); the events to log."""
    called_at = lead.claimed_at or now
    lead.attempt_count += 1
    lead.last_attempt_at = called_at
    if lead.first_attempt_at is None:
        lead.first_attempt_at = called_at
    detail: dict[str, Any] = {"called_at": called_at.isoformat()}

    if disposition in _CLOSING:
        _close(lead, _CLOSING[Disposition(disposition)], now)
    elif disposition == Disposition.CALLBACK:
        assert callback_at is not None
        _reschedule(lead, next_opening(max(callback_at, now), hours), now)
        detail["callback_at"] = lead.due_at.isoformat()
        # As sent (callback_at is when it is due, moved into calling hours): a retry under
        # the same idempotency key is compared with it.
        detail["requested_callback_at"] = callback_at.astimezone(dt.UTC).isoformat()
    elif disposition in _NO_CONTACT:
        if lead.lead_type == LeadType.LIVE and lead.reschedule_count >= version.reschedule_limit:
            lead.lead_type = LeadType.STALE
            _requeue(lead, now)
            detail["became_stale"] = True
        else:
            low, high = version.reschedule_window
            delay = low + (high - low) * rng.random()
            _reschedule(lead, next_opening(now + delay, hours), now)
            lead.reschedule_count += 1
            detail["rescheduled_at"] = lead.due_at.isoformat()
    else:
        raise ValueError(f"Unknown disposition {disposition!r}.")

    if lead.status != QueueStatus.CLOSED:
        score_lead(lead, params_for_version(version.pk))
    events: list[_OutcomeEvent] = [(EventKind.ATTEMPT, contractor_id, disposition, idempotency_key, detail)]
    if detail.get("became_stale"):
        events.append((EventKind.BECAME_STALE, None, "", "", {}))
    elif "rescheduled_at" in detail or "callback_at" in detail:
        events.append((EventKind.RESCHEDULED, None, "", "", detail))
    elif lead.status == QueueStatus.CLOSED:
        events.append((EventKind.CLOSED, None, "", "", {"reason": lead.closed_reason}))
    return events


# The lead and its row version (xmin: any write since gives another), its campaign's
# calling hours, the policy version in force for its customer and, when the outcome's
# idempotency key was seen, who reported what under it (one row at most:
# lead_event_idempotency_unique), in one statement.
_READ_FOR_OUTCOME_SQL = f"""
SELECT {", ".join(f"l.{c}" for c in _LEAD_COLUMNS)}, l.xmin::text,
       cp.time_zone, cp.calling_hours_start, cp.calling_hours_end, cp.calling_days,
       {_version_in_force_sql("l.customer_id")},
       e.id IS NOT NULL, e.contractor_id, e.disposition, e.detail ->> 'requested_callback_at'
FROM leads_lead l
JOIN leads_campaign cp ON cp.id = l.campaign_id
LEFT JOIN leads_leadevent e
  ON e.lead_id = l.id AND e.idempotency_key = %(key)s AND e.idempotency_key <> ''
WHERE l.id = %(lead)s
"""  # noqa: S608 (column names from the model, no input)

# What an outcome may change on the lead, written with its events in one statement, only
# while the lead is still held by the same contractor under the same claim (a holder
# implies status = 'held', which is left unsaid: see lead_one_held_per_holder) and still
# the row version that was read: the write puts back every field of the list as the
# outcome computed it from that read, so a change in between (a PATCH making the lead
# stale, an upsert) would be undone otherwise. Returns a row per event written (none when
# the lead changed since it was read).
_OUTCOME_FIELDS = [
    "lead_type",
    "status",
    "due_at",
    "rescheduled_at",
    "holder_id",
    "lease_expires_at",
    "claimed_at",
    "attempt_count",
    "reschedule_count",
    "first_attempt_at",
    "last_attempt_at",
    "closed_at",
    "closed_reason",
    "priority_key",
    "sla_deadline",
    "scored_version",
    "updated_at",
]
_SAVE_OUTCOME_SQL = f"""
WITH updated AS (
    UPDATE leads_lead SET {", ".join(f"{name} = %({name})s" for name in _OUTCOME_FIELDS)}
    WHERE id = %(lead)s AND holder_id = %(read_holder_id)s
      AND claimed_at IS NOT DISTINCT FROM %(read_claimed_at)s AND xmin::text = %(read_row)s
    RETURNING id
)
INSERT INTO leads_leadevent (lead_id, kind, at, contractor_id, disposition, idempotency_key, detail)
SELECT updated.id, e.kind, %(now)s, e.contractor_id, e.disposition, e.idempotency_key, e.detail::jsonb
FROM updated CROSS JOIN unnest(
    %(kinds)s::text[], %(contractors)s::bigint[], %(dispositions)s::text[], %(keys)s::text[],
    %(details)s::text[]
) AS e(kind, contractor_id, disposition, idempotency_key, detail)
RETURNING 1
"""  # noqa: S608 (field names from a constant list, no input)


@dataclass(frozen=True)
class _SeenOutcome:
    """The attempt already recorded under an outcome's idempotency key."""

    contractor_id: int | None
    disposition: str
    callback_at: dt.datetime | None  # as requested (attempts recorded before it was kept: None)

    def matches(self, *, contractor_id: int, disposition: str, callback_at: dt.datetime | None) -> bool:
        """Whether an outcome sent under the same key is this one again."""
        if (self.contractor_id, self.disposition) != (contractor_id, disposition):
            return False
        # A callback's time is part of it (kept for callbacks only).
        return self.callback_at is None or callback_at is None or self.callback_at == callback_at

    def __str__(self) -> str:
        at = f" at {self.callback_at.isoformat()}" if self.callback_at else ""
        return f"{self.disposition}{at} by contractor {self.contractor_id}"


def _read_for_outcome(
    lead_id: int, idempotency_key: str
) -> tuple[Lead, str, CallingHours, int | None, _SeenOutcome | None]:
    """The lead, its row version, its calling hours, the version in force, and the attempt
    already recorded under ``idempotency_key`` (``None`` when there is none)."""
    rows = run_statement(_READ_FOR_OUTCOME_SQL, {"lead": lead_id, "key": idempotency_key})
    if not rows:
        raise Lead.DoesNotExist(f"No lead {lead_id}.")
    row = rows[0]
    count = len(_LEAD_ATTNAMES)
    lead = Lead.from_db(connection.alias, _LEAD_ATTNAMES, row[:count])
    row_version, time_zone, start, end, days, version_id, key_seen, *seen = row[count:]
    hours = CallingHours(time_zone=time_zone, start=start, end=end, days=frozenset(days))
    if not key_seen:
        return lead, row_version, hours, version_id, None
    contractor, disposition, callback_at = seen
    requested = dt.datetime.fromisoformat(callback_at) if callback_at else None
    return lead, row_version, hours, version_id, _SeenOutcome(contractor, disposition, requested)


def _save_outcome(
    lead: Lead,
    events: list[_OutcomeEvent],
    now: dt.datetime,
    *,
    holder_id: int,
    claimed_at: dt.datetime | None,
    row: str,
) -> bool:
    """Write the lead and its events if the lead is still as read; whether it was."""
    values: dict[str, Any] = {name: getattr(lead, name) for name in _OUTCOME_FIELDS}
    values.update(
        lead=lead.pk,
        now=now,
        read_holder_id=holder_id,
        read_claimed_at=claimed_at,
        read_row=row,
        kinds=[kind for kind, *_ in events],
        contractors=[contractor for _, contractor, *_ in events],
        dispositions=[disposition for _, _, disposition, _, _ in events],
        keys=[key for *_, key, _ in events],
        details=[json.dumps(detail) for *_, detail in events],
    )
    try:
        return bool(run_statement(_SAVE_OUTCOME_SQL, values))
    except IntegrityError as error:
        # The same idempotency key written meanwhile by a copy of this request: the next
        # round reads it and answers as a repeat.
        if _violated_constraint(error) != "lead_event_idempotency_unique":
            raise
        return False


def _reschedule(lead: Lead, when: dt.datetime, now: dt.datetime) -> None:
    lead.rescheduled_at = when
    lead.due_at = when
    lead.holder = None
    lead.lease_expires_at = None
    lead.claimed_at = None
    lead.status = QueueStatus.READY if when <= now else QueueStatus.WAITING
    lead.updated_at = now


def _repeated_without_key(lead: Lead, *, contractor_id: int, disposition: str) -> bool:
    """Without an idempotency key: was this outcome the last thing this contractor reported
    for the lead, with no claim since? (Only asked when the contractor no longer holds it.)"""
    if lead.status == QueueStatus.HELD and lead.holder_id == contractor_id:
        return False
    last = LeadEvent.objects.filter(lead=lead, kind__in=[EventKind.ATTEMPT, EventKind.CLAIMED]).first()
    return (
        last is not None
        and last.kind == EventKind.ATTEMPT
        and last.contractor_id == contractor_id
        and last.disposition == disposition
    )


# --- Periodic work ------------------------------------------------------------------------


def wake_due_leads(*, now: dt.datetime | None = None) -> int:
    """Beat task: move due waiting leads and expired leases back to the queue, everywhere.

    Claims already do this for the campaigns they ask about; this keeps queue figures
    honest for campaigns nobody asks about.
    """
    now = now or timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT array_agg(id) FROM leads_campaign")
        (campaigns,) = cursor.fetchone()
        if not campaigns:
            return 0
        cursor.execute(_WAKE_SQL, {"campaigns": campaigns, "now": now, "contractor": None})
        (woken,) = cursor.fetchone()
    return int(woken)


@dataclass
class RescoreSummary:
    scanned: int = 0
    rewritten: int = 0
    batches: int = 0
    skipped: bool = False  # another rescoring was running
    # Longest write of a batch: from the rescoring thread, its UPDATE, which commits as it
    # ends, so the longest time a batch held its row locks.
    max_batch_seconds: float = 0.0


# Timestamps travel as integer microseconds since 1970: exact both ways, and about ten
# times cheaper to load than timestamptz values (Django loads those in Python).
_RESCORE_READ_SQL = """
SELECT id, customer_id, lead_type, city, source, stage, pricing_plan,
       (extract(epoch FROM created_at) * 1000000)::bigint,
       (extract(epoch FROM due_at) * 1000000)::bigint,
       (extract(epoch FROM last_activity) * 1000000)::bigint,
       priority_key,
       (extract(epoch FROM sla_deadline) * 1000000)::bigint,
       scored_version,
       (extract(epoch FROM updated_at) * 1000000)::bigint
FROM leads_lead
WHERE id > %(after)s AND status <> 'closed'
ORDER BY id LIMIT %(limit)s
"""
# A row is written only if it still holds the key, deadline and version the batch read:
# a writer that changed the lead since the read (an outcome, a PATCH, an upsert) keyed it
# from its new facts itself, and a key computed from the old ones (a callback's lead keyed
# from its old due time) must not overwrite that. Such a row is left for the next pass.
_RESCORE_WRITE_SQL = """
UPDATE leads_lead l
SET priority_key = v.priority_key,
    sla_deadline = timestamptz 'epoch' + v.deadline_us * interval '1 microsecond',
    scored_version = v.scored_version
FROM unnest(%(ids)s::bigint[], %(keys)s::float8[], %(deadlines)s::bigint[], %(versions)s::int[],
            %(read_keys)s::float8[], %(read_deadlines)s::bigint[], %(read_versions)s::int[],
            %(read_updated)s::bigint[])
     AS v(id, priority_key, deadline_us, scored_version, read_key, read_deadline_us, read_version,
          read_updated_us)
WHERE l.id = v.id AND l.status <> 'closed'
  AND (l.priority_key, (extract(epoch FROM l.sla_deadline) * 1000000)::bigint, l.scored_version)
      IS NOT DISTINCT FROM (v.read_key, v.read_deadline_us, v.read_version)
  AND (extract(epoch FROM l.updated_at) * 1000000)::bigint = v.read_updated_us
"""
_UNIX_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _moment(microseconds: int | None) -> dt.datetime | None:
    return None if microseconds is None else _UNIX_EPOCH + dt.timedelta(microseconds=microseconds)


@contextlib.contextmanager
def advisory_lock(key: int, *, wait: bool = False) -> Iterator[bool]:
    """Take the session-level advisory lock ``key``; yields whether it was taken and releases
    it when the block ends.

    For the passes that must not run twice at once (rescoring, training, SLA rollups): without
    ``wait`` the second one sees False and returns at once rather than queueing behind the
    first; with ``wait`` it waits for the lock. A session lock outlives the pass's own
    transactions, and a connection that dies releases it.
    """
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_lock(%s)", [key])
        else:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            if not cursor.fetchone()[0]:
                yield False
                return
        try:
            yield True
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def rescore_leads(
    *, batch_size: int = RESCORE_BATCH, lead_ids: Sequence[int] | None = None
) -> RescoreSummary:
    """Recompute stored keys with the policy versions in force; rewrite only what changed.

    Scores come from :func:`prioritization.scoring.priority_key` (the one definition).
    This thread reads a batch and computes its keys while a writer thread (its own
    connection) writes the previous batch, each write one short transaction: Python and
    PostgreSQL work at the same time. ``lead_ids`` limits the pass to those leads.
    """
    summary = RescoreSummary()
    with advisory_lock(RESCORE_LOCK_KEY) as locked:
        if not locked:
            summary.skipped = True
            return summary
        with _BatchWriter(summary) as writer:
            if lead_ids is not None:
                _rescore_ids(sorted(lead_ids), batch_size, writer)
            else:
                _rescore_all(batch_size, writer)
    return summary


# A batch's write holds its row locks (claims skip those rows) until it commits: when one
# takes longer than this, the next batches are halved, so a busy server never sees a
# window near the 250 ms limit; quick ones let the batch grow back to batch_size.
RESCORE_LOCK_TARGET_SECONDS = 0.1
RESCORE_MIN_BATCH = 250


class _BatchWriter:
    """Writes rescored batches from a thread of its own, one batch behind the reader.

    The queue holds at most one batch, so memory stays at two batches and the adaptive
    batch size reacts one batch late. An error in the writer stops the pass. Called inside
    a transaction (a test, a caller's atomic block), batches are written inline instead:
    another connection could not see that transaction's rows.
    """

    def __init__(self, summary: RescoreSummary, *, threaded: bool = True) -> None:
        self.summary = summary
        self.last_lock_seconds = 0.0
        self.threaded = threaded and not connection.in_atomic_block
        self._batches: queue.Queue[dict[str, list[Any]] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rescore-writer", daemon=True)

    def __enter__(self) -> "_BatchWriter":
        if self.threaded:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.threaded:
            return
        self._batches.put(None)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error

    def put(self, batch: dict[str, list[Any]]) -> None:
        if not self.threaded:
            self._write(batch)
            return
        if self._error is not None:
            raise self._error
        self._batches.put(batch)

    def _run(self) -> None:
        connected = False  # a pass with nothing to rewrite opens no connection
        try:
            while (batch := self._batches.get()) is not None:
                if self._error is not None:
                    continue
                if not connected:
                    with connection.cursor() as cursor:
                        # Keys are derived data that the next pass computes again: a crash
                        # may lose the last batches written (never anything else), and a
                        # batch's row locks go when its UPDATE ends rather than after a WAL
                        # flush as well. This thread's connection is its own and closed at
                        # the end.
                        cursor.execute("SET synchronous_commit = off")
                    connected = True
                self._write(batch)
        except BaseException as error:  # re-raised in the reading thread
            self._error = error
            while self._batches.get() is not None:  # let the reader finish putting
                pass
        finally:
            connection.close()

    def _write(self, batch: dict[str, list[Any]]) -> None:
        # From the writer thread: one statement in autocommit, its own transaction, which
        # commits as it ends, in the server, so its row locks last as long as the UPDATE
        # runs (with BEGIN and COMMIT of their own, a thread waiting for a core or the GIL
        # between the UPDATE and the COMMIT held them that much longer); the time taken
        # here, round trip included, bounds the time they were held. Inline, inside the
        # caller's transaction, a failing batch rolls back alone.
        started = time.perf_counter()
        with _one_statement(), statement_cursor() as cursor:
            cursor.execute(_RESCORE_WRITE_SQL, batch, prepare=True)
            self.summary.rewritten += cursor.rowcount
        self.last_lock_seconds = time.perf_counter() - started
        self.summary.max_batch_seconds = max(self.summary.max_batch_seconds, self.last_lock_seconds)


def _rescore_all(batch_size: int, writer: _BatchWriter) -> None:
    after = 0
    size = batch_size
    versions: dict[int, PolicyVersion] = {}
    with statement_cursor() as cursor:
        while True:
            cursor.execute(_RESCORE_READ_SQL, {"after": after, "limit": size}, prepare=True, binary=True)
            rows = cursor.fetchall()
            if not rows:
                return
            after = rows[-1][0]
            _rescore_rows(rows, versions, writer)
            if writer.last_lock_seconds > RESCORE_LOCK_TARGET_SECONDS:
                size = max(RESCORE_MIN_BATCH, size // 2)
            elif writer.last_lock_seconds < RESCORE_LOCK_TARGET_SECONDS / 2:
                size = min(batch_size, size * 2)


def _rescore_ids(ids: list[int], batch_size: int, writer: _BatchWriter) -> None:
    versions: dict[int, PolicyVersion] = {}
    with statement_cursor() as cursor:
        for start in range(0, len(ids), batch_size):
            cursor.execute(
                _RESCORE_READ_SQL.replace("id > %(after)s", "id = ANY(%(ids)s::bigint[])"),
                {"ids": ids[start : start + batch_size], "limit": batch_size},
                binary=True,
            )
            _rescore_rows(cursor.fetchall(), versions, writer)


def _rescore_rows(
    rows: list[tuple[Any, ...]], versions: dict[int, PolicyVersion], writer: _BatchWriter
) -> None:
    """Rescore these rows and hand what changed to the writer."""
    missing = {row[1] for row in rows} - versions.keys()
    if missing:
        versions.update(current_versions(missing))
    ids: list[int] = []
    keys: list[float] = []
    deadlines: list[int | None] = []
    version_ids: list[int] = []
    # What the row held when read: the write is conditional on it (_RESCORE_WRITE_SQL).
    read_keys: list[float | None] = []
    read_deadlines: list[int | None] = []
    read_versions: list[int | None] = []
    read_updated: list[int] = []
    for (
        lead_id,
        customer_id,
        lead_type,
        city,
        source,
        stage,
        plan,
        created_us,
        due_us,
        activity_us,
        old_key,
        old_deadline_us,
        old_version,
        updated_us,
    ) in rows:
        params = params_for_version(versions[customer_id].pk)
        created_at = _UNIX_EPOCH + dt.timedelta(microseconds=created_us)
        facts = LeadFacts(
            lead_type,
            city,
            source,
            stage,
            plan,
            created_at,
            _UNIX_EPOCH + dt.timedelta(microseconds=due_us),
            _moment(activity_us),
        )
        key = priority_key(facts, params)
        deadline = sla_deadline(facts, params)
        deadline_us = None if deadline is None else (deadline - _UNIX_EPOCH) // _MICROSECOND
        if (key, deadline_us, params.version_id) != (old_key, old_deadline_us, old_version):
            ids.append(lead_id)
            keys.append(key)
            deadlines.append(deadline_us)
            version_ids.append(params.version_id)
            read_keys.append(old_key)
            read_deadlines.append(old_deadline_us)
            read_versions.append(old_version)
            read_updated.append(updated_us)
    writer.summary.scanned += len(rows)
    writer.summary.batches += 1
    if ids:
        writer.put(
            {
                "ids": ids,
                "keys": keys,
                "deadlines": deadlines,
                "versions": version_ids,
                "read_keys": read_keys,
                "read_deadlines": read_deadlines,
                "read_versions": read_versions,
                "read_updated": read_updated,
            }
        )


def ranked_leads_at(
    *, campaign_ids: Sequence[int], now: dt.datetime, limit: int | None = None
) -> list[Ranked]:
    """Every eligible lead of the campaigns ranked at ``now`` by brute force (admin preview,
    simulator checks, tests' oracle). A scan: not for the claim path."""
    # As a claim sees them: only campaigns active and inside their calling hours; a held
    # lead whose lease ran out before it is due again (a held lead re-pushed with a later
    # rescheduled_at) goes back to waiting, not to a contractor.
    open_campaigns = [
        campaign.pk
        for campaign in Campaign.objects.filter(pk__in=campaign_ids, active=True)
        if CallingHours.of(campaign).is_open(now)
    ]
    leads = list(
        Lead.objects.filter(campaign_id__in=open_campaigns).filter(
            Q(status=QueueStatus.READY)
            | Q(status=QueueStatus.WAITING, due_at__lte=now)
            | Q(status=QueueStatus.HELD, lease_expires_at__lte=now, due_at__lte=now)
        )
    )
    # Each lead keyed as a claim keys it (_scored_params): under its own version, else the
    # one in force for its customer.
    in_force = current_versions(lead.customer_id for lead in leads)
    candidates = [
        Candidate(
            lead_id=lead.pk,
            lead_type=lead.lead_type,
            key=lead.priority_key if lead.priority_key is not None else -1e300,
            deadline=lead.sla_deadline,
            first_attempt_at=lead.first_attempt_at,
            policy=_scored_params(lead.scored_version, in_force[lead.customer_id]),
        )
        for lead in leads
    ]
    ranked = sorted((rank(c, now) for c in candidates), key=lambda r: r.sort_key)
    return ranked[:limit] if limit is not None else ranked


def calling_hours_of(campaign_ids: Iterable[int]) -> dict[int, CallingHours]:
    """The calling hours of these campaigns, by id (one query)."""
    campaigns = Campaign.objects.filter(pk__in=set(campaign_ids)).only(
        "time_zone", "calling_hours_start", "calling_hours_end", "calling_days"
    )
    return {campaign.pk: CallingHours.of(campaign) for campaign in campaigns}


class ArrivalScorer:
    """Scores leads as they arrive, with the keys rescoring would give them.

    Used by every ingest path for new leads; ``customer_plans`` resolves the pricing
    plan of leads sent without one.
    """

    def __init__(self, customer_plans: dict[int, str]) -> None:
        self._plans = customer_plans
        self._params: dict[int, PolicyParams] = {}
        self._hours: dict[int, CallingHours] = {}

    def prepare(self, leads: Iterable[LeadInput]) -> None:
        """Load what these leads' customers and campaigns need; call it before
        :meth:`in_calling_hours` and :meth:`score`, which must not query (they run while the
        connection is busy with a COPY)."""
        customer_ids: set[int] = set()
        rescheduled_campaign_ids: set[int] = set()
        for lead in leads:
            customer_ids.add(lead.customer_id)
            if lead.rescheduled_at is not None:
                rescheduled_campaign_ids.add(lead.campaign_id)
        missing = customer_ids - self._params.keys()
        if missing:
            for customer_id, version in current_versions(missing).items():
                self._params[customer_id] = params_for_version(version.pk)
        if missing := rescheduled_campaign_ids - self._hours.keys():
            self._hours.update(calling_hours_of(missing))

    def in_calling_hours(self, lead: LeadInput) -> LeadInput:
        """The lead with a ``rescheduled_at`` outside its campaign's calling hours moved to
        the next opening, as the engine's reschedules and the Contract app's PATCH are."""
        if lead.rescheduled_at is None:
            return lead
        opening = next_opening(lead.rescheduled_at, self._hours[lead.campaign_id])
        return lead if opening == lead.rescheduled_at else lead._replace(rescheduled_at=opening)

    def score(self, lead: LeadInput, now: dt.datetime) -> tuple[dt.datetime, float, dt.datetime | None, int]:
        """(due_at, priority_key, sla_deadline, scored_version) of a new lead."""
        params = self._params[lead.customer_id]
        created = lead.created_at or now
        due = max(created, lead.rescheduled_at) if lead.rescheduled_at is not None else created
        facts = LeadFacts(
            lead.lead_type,
            lead.city,
            lead.source,
            lead.stage,
            lead.pricing_plan or self._plans[lead.customer_id],
            created,
            due,
            lead.last_activity,
        )
        return due, priority_key(facts, params), sla_deadline(facts, params), params.version_id


def rescore_lead_ids(lead_ids: Sequence[int]) -> int:
    """Rescore these leads now (after their data changed); returns how many were rewritten.

    Runs inside the caller's transaction and without the rescoring lock: it touches only
    rows the caller has just written.
    """
    if not lead_ids:
        return 0
    summary = RescoreSummary()
    with _BatchWriter(summary, threaded=False) as writer:
        _rescore_ids(sorted(lead_ids), RESCORE_BATCH, writer)
    return summary.rewritten

"""Learned models from the outcomes in the database: gather, evaluate, fit, store, apply.

**Training signal.** A lead's outcome is known once it is closed:

- converted: ``converted`` (the outcome API) and ``past_converted`` (imported history) → 1;
- contacted, not converted: ``not_interested``, ``do_not_call`` and ``past_not_converted`` → 0;
- left out: no answer and busy (they reschedule the lead and say nothing about whether the
  person would convert once reached: counting them as 0 would teach the model who picks
  up, not who buys), wrong numbers (the person was never reached), leads the customer
  withdrew, and leads still open (a callback is not an outcome yet).

Time is the lead's ``created_at``: the holdout is the newest 20% of outcomes, across all
customers, and every model of a comparison is fitted on the older 80% only.

**Per run** (:func:`train_models`, daily by Celery beat, or on demand): gather the
outcomes of the training window (aggregated in SQL: a million outcomes are a few
thousand distinct fact combinations with a count), evaluate on the holdout, fit again on
every outcome, store a :class:`ModelVersion` for the pooled model and for each customer
with outcomes or with a learned policy, and point every learned or blended policy at
its new model through :func:`services.save_policy_settings` (a new policy version:
versions are immutable, the claim path caches them by id; saving enqueues a rescoring).
"""

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, models, transaction
from django.utils import timezone

from leads.models import CloseReason, Customer
from prioritization import services
from prioritization.learning import (
    DEFAULT_SETTINGS,
    Bools,
    Dataset,
    Floats,
    LearningError,
    LearningSettings,
    Metrics,
    fit_learned,
    run_holdout,
)
from prioritization.models import (
    ModelVersion,
    PolicyVersion,
    PriorityPolicy,
    TrainingTrigger,
    WeightsSource,
    version_values,
)
from prioritization.scoring import EPOCH, RECENCY, LeadFacts, log_base, recency_label

logger = logging.getLogger(__name__)

POSITIVE_REASONS = (CloseReason.CONVERTED, CloseReason.PAST_CONVERTED)
NEGATIVE_REASONS = (CloseReason.NOT_INTERESTED, CloseReason.DO_NOT_CALL, CloseReason.PAST_NOT_CONVERTED)
# The facts a lead store row gives the model; "recency" is how long before arriving the
# lead was last active (scoring.recency_bin), so a stored key can use it.
FEATURES = ("city", "source", "stage", RECENCY)
# pg_advisory_lock key of a training run ("LRTM"): the beat task and "train now" may
# overlap; the second returns at once instead of storing duplicate versions.
TRAINING_LOCK_KEY = 0x4C52544D
# Hours between last_activity and created_at, bucketed in SQL. The bounds of
# scoring.RECENCY_BINS are among these edges, so each bucket falls in one recency bin;
# the finer buckets let the manual weights' last-activity decay be evaluated too.
_ACTIVITY_EDGES_HOURS = (
    0.0,
    0.25,
    0.5,
    1.0,
    2.0,
    4.0,
    8.0,
    16.0,
    24.0,
    48.0,
    96.0,
    168.0,
    336.0,
    720.0,
    1440.0,
)

_GATHER_SQL = """
WITH outcomes AS (
    SELECT l.id, l.customer_id, l.city, l.source, l.stage, l.pricing_plan, l.lead_type, l.created_at,
           (l.closed_reason = ANY(%(positive)s))::int AS label,
           width_bucket((extract(epoch FROM l.created_at - l.last_activity) / 3600.0)::float8,
                        %(edges)s::float8[]) AS bucket
    FROM leads_lead l
    WHERE l.status = 'closed' AND l.closed_reason = ANY(%(reasons)s)
      AND l.created_at >= %(start)s AND l.created_at < %(end)s
), ordered AS (
    SELECT o.*, row_number() OVER (ORDER BY o.created_at, o.id) AS position, count(*) OVER () AS total
    FROM outcomes o
)
SELECT customer_id, city, source, stage, pricing_plan, lead_type, bucket,
       position > total - ceil(total * %(share)s) AS holdout, label,
       count(*), min(created_at), max(created_at)
FROM ordered
GROUP BY customer_id, city, source, stage, pricing_plan, lead_type, bucket, 8, label
ORDER BY customer_id, 8
"""


class TrainingDataError(LearningError):
    """The database holds too few outcomes for what was asked; the message says why."""


def _bucket_hours(bucket: int | None) -> float | None:
    """A representative number of hours of an activity bucket (None: unknown)."""
    if bucket is None:
        return None
    edges = _ACTIVITY_EDGES_HOURS
    if bucket <= 0:
        return 0.0  # last active after arriving
    if bucket >= len(edges):
        return edges[-1] * 1.5
    return (edges[bucket - 1] + edges[bucket]) / 2


@dataclass(frozen=True)
class TrainingData:
    """Aggregated outcomes: one row per distinct (customer, facts, holdout, label), weighted."""

    dataset: Dataset
    holdout: Bools
    customers: list[int]
    plans: list[str]
    lead_types: list[str]
    cities: list[str]
    sources: list[str]
    stages: list[str]
    activity_hours: list[float | None]
    window_start: dt.datetime | None
    window_end: dt.datetime | None

    @property
    def outcomes(self) -> int:
        return round(self.dataset.total_weight)

    def count(self, customer_id: int | None, *, holdout: bool | None = None, positive: bool = False) -> int:
        rows = np.ones(self.dataset.size, dtype=bool)
        if customer_id is not None:
            rows &= self.dataset.groups == str(customer_id)
        if holdout is not None:
            rows &= self.holdout == holdout
        weights = self.dataset.weights * (self.dataset.labels if positive else 1.0)
        return round(float(weights[rows].sum()))


def gather_training_data(*, start: dt.datetime, end: dt.datetime, holdout_share: float) -> TrainingData:
    """The outcomes of leads created in [start, end), the newest ``holdout_share`` marked."""
    with connection.cursor() as cursor:
        cursor.execute(
            _GATHER_SQL,
            {
                "positive": list(POSITIVE_REASONS),
                "reasons": [*POSITIVE_REASONS, *NEGATIVE_REASONS],
                "edges": list(_ACTIVITY_EDGES_HOURS),
                "start": start,
                "end": end,
                "share": holdout_share,
            },
        )
        rows = cursor.fetchall()
    hours = [_bucket_hours(row[6]) for row in rows]
    values = [[row[1], row[2], row[3], recency_label(h)] for row, h in zip(rows, hours, strict=True)]
    dataset = Dataset.build(
        FEATURES,
        values,
        [float(row[8]) for row in rows],
        weights=[float(row[9]) for row in rows],
        groups=[str(row[0]) for row in rows],
    )
    return TrainingData(
        dataset=dataset,
        holdout=np.array([bool(row[7]) for row in rows], dtype=bool),
        customers=[row[0] for row in rows],
        plans=[row[4] for row in rows],
        lead_types=[row[5] for row in rows],
        cities=[row[1] for row in rows],
        sources=[row[2] for row in rows],
        stages=[row[3] for row in rows],
        activity_hours=hours,
        window_start=min((row[10] for row in rows), default=None),
        window_end=max((row[11] for row in rows), default=None),
    )


def manual_log_scores(data: TrainingData) -> Floats:
    """Each row's log score under its customer's hand-set weights (the policy in force),
    through the same pure scoring as the claim path, at equal turnaround."""
    versions = services.current_versions(set(data.customers))
    params = {customer_id: version.manual_params() for customer_id, version in versions.items()}
    scores = np.empty(data.dataset.size)
    for index, customer_id in enumerate(data.customers):
        hours = data.activity_hours[index]
        facts = LeadFacts(
            lead_type=data.lead_types[index],
            city=data.cities[index],
            source=data.sources[index],
            stage=data.stages[index],
            pricing_plan=data.plans[index],
            created_at=EPOCH,
            due_at=EPOCH,
            last_activity=None if hours is None else EPOCH - dt.timedelta(hours=hours),
        )
        scores[index] = log_base(facts, params[customer_id])
    return scores


# The longest training window: a century of outcomes. Without a bound, a typo of many
# digits reached back past the year 1, where Python's dates end (an OverflowError).
MAX_WINDOW_DAYS = 36_500


def window_days_error(window_days: int | None) -> str | None:
    """Why a ``--window-days`` given on the command line cannot be used; ``None`` if it can."""
    if window_days is None or 1 <= window_days <= MAX_WINDOW_DAYS:
        return None
    return f"--window-days must be between 1 and {MAX_WINDOW_DAYS:,}, got {window_days}."


def _window_days() -> int:
    return int(settings.LEADRANK_TRAINING_WINDOW_DAYS)


def _metrics_json(metrics: dict[str, Metrics]) -> list[dict[str, Any]]:
    """A list in the comparison's order (jsonb does not keep the order of keys)."""
    return [{"name": name, **m.as_dict()} for name, m in metrics.items()]


# --- Selectors ------------------------------------------------------------------------------------


def latest_model(*, customer_id: int | None) -> ModelVersion | None:
    """The newest model of a customer (the pooled model for ``None``)."""
    versions = ModelVersion.objects.all()
    if customer_id is None:
        versions = versions.filter(customer__isnull=True)
    else:
        versions = versions.filter(customer_id=customer_id)
    return versions.order_by("-number").first()


def model_for_policy(*, policy: PriorityPolicy) -> ModelVersion | None:
    """The model a learned policy should use: its customer's newest, else the pooled one."""
    if policy.customer_id is not None:
        own = latest_model(customer_id=policy.customer_id)
        if own is not None:
            return own
    return latest_model(customer_id=None)


def training_in_progress() -> bool:
    """Whether a training run is under way now: its lock, tried and let go at once."""
    with services.advisory_lock(TRAINING_LOCK_KEY) as free:
        return not free


# --- Training -------------------------------------------------------------------------------------


@dataclass
class TrainingSummary:
    skipped: bool = False  # another training run held the lock
    reason: str = ""  # why nothing was stored, when nothing was
    outcomes: int = 0
    holdout_outcomes: int = 0
    customers: int = 0
    model_version_ids: list[int] = field(default_factory=list)
    policy_version_ids: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def train_models(
    *,
    now: dt.datetime | None = None,
    trigger: str = TrainingTrigger.SCHEDULE,
    user_id: int | None = None,
    window_days: int | None = None,
    learning: LearningSettings = DEFAULT_SETTINGS,
    requested_at: dt.datetime | None = None,
) -> TrainingSummary:
    """Train, evaluate and store every model; point learned and blended policies at them.

    Only one run at a time (an advisory lock; a second run returns ``skipped``). A run
    asked for at ``requested_at`` ("train now") is skipped too when a run that started
    since then has stored its models: two presses of the button, queued behind other
    work, train once. Nothing is stored when the window holds no learnable outcomes
    (``reason`` says why).
    """
    now = now or timezone.now()
    summary = TrainingSummary()
    with services.advisory_lock(TRAINING_LOCK_KEY) as locked:
        if not locked:
            summary.skipped = True
            summary.reason = "Skipped: a training run is already in progress."
            return summary
        if requested_at is not None:
            # The newest id is the newest run's: runs store their versions one at a time (this lock).
            last = ModelVersion.objects.order_by("-id").values_list("trained_at", flat=True).first()
            if last is not None and last >= requested_at:
                summary.skipped = True
                summary.reason = (
                    f"Skipped: models were trained at {last:%Y-%m-%d %H:%M:%S} UTC, after this run was "
                    "asked for."
                )
                return summary
        _train_locked(
            summary,
            now=now,
            trigger=trigger,
            user_id=user_id,
            window_days=window_days or _window_days(),
            learning=learning,
        )
    return summary


def _timed(summary: TrainingSummary, name: str, started: float) -> float:
    now = time.perf_counter()
    summary.seconds[name] = round(now - started, 3)
    return now


def _train_locked(
    summary: TrainingSummary,
    *,
    now: dt.datetime,
    trigger: str,
    user_id: int | None,
    window_days: int,
    learning: LearningSettings,
) -> None:
    started = clock = time.perf_counter()
    data = gather_training_data(
        start=now - dt.timedelta(days=window_days), end=now, holdout_share=learning.holdout_share
    )
    clock = _timed(summary, "gather", clock)
    summary.outcomes = data.outcomes
    summary.holdout_outcomes = data.count(None, holdout=True)
    customer_ids = sorted(set(data.customers))
    summary.customers = len(customer_ids)

    evaluation: dict[str | None, list[dict[str, Any]]] = {}
    evaluation_error = ""
    try:
        run = run_holdout(
            data.dataset, data.holdout, settings=learning, manual_log_scores=manual_log_scores(data)
        )
        evaluation[None] = _metrics_json(run.metrics())
        for customer_id in customer_ids:
            evaluation[str(customer_id)] = _metrics_json(run.metrics(str(customer_id)))
        fit_seconds = {name: round(s, 3) for name, s in run.fit_seconds.items()}
    except LearningError as exc:
        evaluation_error = f"Not evaluated: {exc}"
        fit_seconds = {}
    clock = _timed(summary, "evaluate", clock)

    try:
        model = fit_learned(data.dataset, learning)
    except LearningError as exc:
        summary.reason = f"No model trained: {exc} ({data.outcomes} outcomes in the last {window_days} days.)"
        return
    clock = _timed(summary, "fit", clock)

    learned_customers = set(
        PriorityPolicy.objects.filter(
            customer__isnull=False,
            current_version__weights_source__in=[WeightsSource.LEARNED, WeightsSource.BLEND],
        ).values_list("customer_id", flat=True)
    )
    owners: list[int | None] = [None, *sorted(set(customer_ids) | learned_customers)]
    common = {
        "trained_at": now,
        "trigger": trigger,
        # The admin who asked, unless deleted since (the task ran later).
        "created_by_id": user_id if user_id and User.objects.filter(pk=user_id).exists() else None,
        "window_start": data.window_start,
        "window_end": data.window_end,
        "all_rows": data.outcomes,
        "settings": {
            "window_days": window_days,
            "min_count": learning.min_count,
            "regularization": learning.regularization,
            "customer_prior": learning.customer_prior,
            "holdout_share": learning.holdout_share,
            "features": list(FEATURES),
        },
    }
    with transaction.atomic():
        numbers: dict[int | None, int] = dict(
            ModelVersion.objects.values("customer_id")
            .annotate(last=models.Max("number"))
            .values_list("customer_id", "last")
        )
        existing = set(
            Customer.objects.filter(pk__in=[o for o in owners if o is not None]).values_list("pk", flat=True)
        )
        created: dict[int | None, ModelVersion] = {}
        for owner in owners:
            if owner is not None and owner not in existing:
                continue  # deleted while we trained
            group = None if owner is None else str(owner)
            metrics: dict[str, Any] = {"holdout": evaluation.get(group, []), "fit_seconds": fit_seconds}
            if evaluation_error:
                metrics["error"] = evaluation_error
            created[owner] = ModelVersion.objects.create(
                customer_id=owner,
                number=numbers.get(owner, 0) + 1,
                training_rows=data.count(owner) if owner is not None else data.outcomes,
                positive_rows=data.count(owner, positive=True),
                holdout_rows=data.count(owner, holdout=True),
                base_rate=model.base_rate(group),
                multipliers=model.multipliers(group),
                metrics=metrics,
                training_seconds=round(time.perf_counter() - started, 3),
                **common,
            )
        summary.model_version_ids = [version.pk for version in created.values()]
        summary.policy_version_ids = _apply_to_policies(created, user_id=user_id)
    _timed(summary, "store", clock)
    summary.seconds["total"] = round(time.perf_counter() - started, 3)
    logger.info(
        "Trained %d model versions on %d outcomes in %.1f s.",
        len(created),
        data.outcomes,
        summary.seconds["total"],
    )


# Tries to apply a new model to a policy that staff keep saving meanwhile.
APPLY_ATTEMPTS = 3


def _apply_to_policies(created: dict[int | None, ModelVersion], *, user_id: int | None) -> list[int]:
    """A new version of every learned or blended policy, pointing at its new model."""
    learned = PriorityPolicy.objects.select_related("current_version").filter(
        current_version__weights_source__in=[WeightsSource.LEARNED, WeightsSource.BLEND]
    )
    new_versions = []
    for policy_id in learned.values_list("pk", flat=True):
        # From the version in force, so that an admin edit saved meanwhile is never undone:
        # the policy is read again and the model applied on top of that edit.
        for _ in range(APPLY_ATTEMPTS):
            policy = learned.filter(pk=policy_id).first()
            if policy is None:  # no longer learned or blended
                break
            try:
                version = _point_at_model(policy, created)
            except services.PolicyChangedMeanwhile:
                continue
            if version is not None:
                new_versions.append(version.pk)
            break
        else:
            logger.warning(
                "policy %s kept changing while training applied its model; the next training applies it",
                policy_id,
            )
    return new_versions


def _point_at_model(policy: PriorityPolicy, created: dict[int | None, ModelVersion]) -> PolicyVersion | None:
    current = policy.current_version
    assert current is not None
    model = created.get(policy.customer_id) or created.get(None)
    if model is None:
        return None
    used = current.learned_model
    if used is not None and (used.multipliers, used.base_rate) == (model.multipliers, model.base_rate):
        # Same outcomes, same fit: a new version would only rescore every lead for nothing.
        return None
    return services.save_policy_settings(
        policy=policy,
        values={**version_values(current), "learned_model": model},
        note=f"{model.describe()} trained",
        user=None,
        base_version=current.number,
    )


# --- Evaluation of one customer (manage.py evaluate_model --customer-id) ----------------------------


@dataclass(frozen=True)
class CustomerEvaluation:
    customer: Customer
    outcomes: int  # every customer's, in the window
    customer_outcomes: int
    train_rows: int  # this customer's
    holdout_rows: int  # this customer's
    metrics: dict[str, Metrics]  # this customer's holdout
    overall: dict[str, Metrics]  # every customer's holdout
    fit_seconds: dict[str, float]
    window_start: dt.datetime | None
    window_end: dt.datetime | None


def evaluate_customer(
    *,
    customer_id: int,
    now: dt.datetime | None = None,
    window_days: int | None = None,
    learning: LearningSettings = DEFAULT_SETTINGS,
) -> CustomerEvaluation:
    """Fit every model on the older outcomes and compare them on the customer's newest.

    Raises :class:`TrainingDataError` (readable) when there is nothing to evaluate.
    """
    now = now or timezone.now()
    window_days = window_days or _window_days()
    customer = Customer.objects.filter(pk=customer_id).first()
    if customer is None:
        raise TrainingDataError(f"There is no customer {customer_id}.")
    data = gather_training_data(
        start=now - dt.timedelta(days=window_days), end=now, holdout_share=learning.holdout_share
    )
    own = data.count(customer_id)
    if own == 0:
        raise TrainingDataError(
            f"Customer {customer_id} ({customer.name}) has no outcomes (converted or contacted and not "
            f"converted) among leads created in the last {window_days} days."
        )
    holdout_rows = data.count(customer_id, holdout=True)
    if holdout_rows == 0:
        raise TrainingDataError(
            f"None of customer {customer_id}'s {own} outcomes is among the newest "
            f"{learning.holdout_share:.0%} of all outcomes, so there is nothing to test on."
        )
    run = run_holdout(
        data.dataset, data.holdout, settings=learning, manual_log_scores=manual_log_scores(data)
    )
    return CustomerEvaluation(
        customer=customer,
        outcomes=data.outcomes,
        customer_outcomes=own,
        train_rows=own - holdout_rows,
        holdout_rows=holdout_rows,
        metrics=run.metrics(str(customer_id)),
        overall=run.metrics(),
        fit_seconds=run.fit_seconds,
        window_start=data.window_start,
        window_end=data.window_end,
    )

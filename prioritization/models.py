"""Priority policies (versioned, edited in the admin) and the log of next-lead decisions."""

import dataclasses
import datetime as dt
import json
import math
import re
from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from leads.models import Contractor, Customer, Lead
from prioritization.scoring import BY_SCORE, FIFO, PolicyParams, blend_weights

# Weights multiply a lead's score; outside this range a weight is a typo, not a policy.
MIN_WEIGHT = 0.01
MAX_WEIGHT = 100.0
PLANS = ("starter", "pro", "enterprise")

# Bounds of a version's numbers (inclusive, in each field's unit), enforced by clean() and by
# CheckConstraints. Outside them a value is a typo, not a policy, and some break the engine:
# a deadline or reschedule past the year 9999 (OverflowError on ingest, claims, outcomes), a
# decay so short that 1 / τ is infinite (keys of ±inf).
SLA_WINDOW_MINUTES = (1.0, 1440.0)  # a minute to a day; SLA protection at most the window
DECAY_RANGE = (0.01, 1e6)  # live decay minutes, activity decay hours, stale decay days
RESCHEDULE_HOURS = (0.01, 720.0)  # 36 s to 30 days
LEASE_SECONDS = (30, 86_400)  # time to dial, at most a day
# PostgreSQL text and jsonb cannot hold NUL, and UTF-8 cannot encode unpaired surrogates.
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")


class WeightsJSONEncoder(json.JSONEncoder):
    """Writes unpaired surrogates as ``\\uXXXX`` escapes: a form showing weights text back
    (with ``ensure_ascii=False``) must not hold characters the response cannot encode."""

    def encode(self, o: Any) -> str:
        return _UNSTORABLE_CHARS.sub(lambda m: f"\\u{ord(m.group()):04x}", super().encode(o))


def _number(value: float) -> str:
    """A bound as a product person reads it: 1,440 and 0.01, not 1440.0 and 1e-02."""
    return f"{value:,.0f}" if value >= 1 and value == int(value) else f"{value:g}"


class PriorityPolicy(models.Model):
    """The default policy (``customer`` empty) or one customer's; points at its current version."""

    customer = models.OneToOneField(
        Customer,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="priority_policy",
        help_text="Empty for the default policy, which applies to customers without their own.",
    )
    name = models.CharField(max_length=200)
    current_version = models.ForeignKey(
        "PolicyVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        verbose_name_plural = "priority policies"
        constraints = [
            # One policy per customer and one default (NULL customer): NULLs not distinct.
            models.UniqueConstraint(
                fields=["customer"], nulls_distinct=False, name="priority_policy_one_per_customer"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_default(self) -> bool:
        return self.customer_id is None


class WeightsSource(models.TextChoices):
    """Where a policy's city, source and stage multipliers come from."""

    MANUAL = "manual", "Manual weights"
    LEARNED = "learned", "Learned model"
    BLEND = "blend", "Blend of manual weights and learned model"


class PolicyVersion(models.Model):
    """One immutable version of a policy: every change in the admin adds a version."""

    policy = models.ForeignKey(PriorityPolicy, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    note = models.CharField(max_length=500, blank=True, default="")

    ordering = models.CharField(
        max_length=10,
        choices=[(BY_SCORE, "By score (weights, turnaround, SLA protection)"), (FIFO, "First in, first out")],
        default=BY_SCORE,
        help_text="FIFO serves the earliest due lead first and ignores weights and SLA protection "
        "(today's behaviour, for comparison).",
    )
    sla_window_minutes = models.FloatField(
        default=30.0,
        help_text="A live lead is served in SLA when its first call starts within this many minutes "
        "of created_at. 1 to 1,440 (a day).",
    )
    sla_target = models.FloatField(default=0.9, help_text="Share of live leads to serve in SLA, in (0, 1].")
    sla_protect_minutes = models.FloatField(
        default=10.0,
        help_text="A never-called live lead this close to its SLA deadline goes first "
        "(earliest deadline first). 0 (off) up to the SLA window: a lead is at most a window away "
        "from its deadline.",
    )
    live_decay_minutes = models.FloatField(
        default=20.0,
        help_text="Conversion of a live lead falls as exp(−wait / this). 0.01 to 1,000,000 minutes.",
    )
    live_activity_decay_hours = models.FloatField(
        default=0.0,
        help_text="For live leads: factor exp(−hours between last_activity and arrival / this); "
        "0 turns it off, else 0.01 to 1,000,000 hours.",
    )
    stale_activity_decay_days = models.FloatField(
        default=14.0,
        help_text="Stale leads score exp(−days since last_activity / this). 0.01 to 1,000,000 days.",
    )
    city_weights = models.JSONField(
        default=dict,
        blank=True,
        encoder=WeightsJSONEncoder,
        help_text='Multipliers per city, e.g. {"Mumbai": 1.4}. Unknown cities weigh 1.',
    )
    source_weights = models.JSONField(
        default=dict, blank=True, encoder=WeightsJSONEncoder, help_text="Multipliers per source."
    )
    stage_weights = models.JSONField(
        default=dict, blank=True, encoder=WeightsJSONEncoder, help_text="Multipliers per stage."
    )
    plan_weights = models.JSONField(
        default=dict,
        blank=True,
        encoder=WeightsJSONEncoder,
        help_text='Multipliers per pricing plan, e.g. {"enterprise": 1.5}.',
    )
    stale_every = models.PositiveSmallIntegerField(
        default=0,
        help_text="0: live leads always first. n: every n-th claim of a contractor takes the best "
        "stale lead, so stale leads are never starved.",
    )
    reschedule_min_hours = models.FloatField(
        default=22.0,
        help_text="A no-answer reschedules a lead at random between this many hours and the maximum. "
        "0.01 to 720 (30 days).",
    )
    reschedule_max_hours = models.FloatField(
        default=24.0, help_text="At least the minimum, at most 720 hours (30 days)."
    )
    reschedule_limit = models.PositiveSmallIntegerField(
        default=3, help_text="A live lead is rescheduled at most this many times, then becomes stale."
    )
    lease_seconds = models.PositiveIntegerField(
        default=600,
        help_text="How long a contractor holds a lead before it returns to the queue. "
        "30 to 86,400 seconds (a day).",
    )
    claims_per_hour_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="Per contractor, at least 1; empty = no cap."
    )
    claims_per_day_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="Per contractor, at least 1; empty = no cap."
    )
    weights_source = models.CharField(
        max_length=10,
        choices=WeightsSource.choices,
        default=WeightsSource.MANUAL,
        help_text="Learned: the model's multipliers for city, source, stage and last-activity recency "
        "replace the manual ones (plan weights and time decay stay). Blend: both, mixed in log space.",
    )
    learned_share = models.FloatField(
        default=0.5,
        help_text="Blend only: the learned model's share, 0 to 1 (0.5 = geometric mean of manual and "
        "learned multipliers).",
    )
    learned_model = models.ForeignKey(
        "ModelVersion",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="policy_versions",
        help_text="The model version in use. Training points learned and blend policies at each new "
        "version; left empty, saving picks the newest model of the policy's customer.",
    )

    class Meta:
        ordering = ["policy_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "number"], name="policy_version_number_unique"),
            # The bounds of clean() (see SLA_WINDOW_MINUTES and below). In PostgreSQL NaN is
            # above every number, so an upper bound also refuses NaN.
            models.CheckConstraint(
                condition=Q(sla_window_minutes__range=SLA_WINDOW_MINUTES), name="policy_sla_window_in_range"
            ),
            models.CheckConstraint(
                condition=Q(sla_target__gt=0, sla_target__lte=1), name="policy_sla_target_in_0_1"
            ),
            models.CheckConstraint(
                condition=Q(sla_protect_minutes__gte=0, sla_protect_minutes__lte=F("sla_window_minutes")),
                name="policy_protect_within_window",
            ),
            models.CheckConstraint(
                condition=Q(live_decay_minutes__range=DECAY_RANGE), name="policy_live_decay_in_range"
            ),
            models.CheckConstraint(
                condition=Q(live_activity_decay_hours=0) | Q(live_activity_decay_hours__range=DECAY_RANGE),
                name="policy_activity_decay_off_or_in_range",
            ),
            models.CheckConstraint(
                condition=Q(stale_activity_decay_days__range=DECAY_RANGE), name="policy_stale_decay_in_range"
            ),
            models.CheckConstraint(
                condition=Q(
                    reschedule_min_hours__gte=RESCHEDULE_HOURS[0],
                    reschedule_max_hours__gte=F("reschedule_min_hours"),
                    reschedule_max_hours__lte=RESCHEDULE_HOURS[1],
                ),
                name="policy_reschedule_window_in_range",
            ),
            models.CheckConstraint(
                condition=Q(lease_seconds__range=LEASE_SECONDS), name="policy_lease_in_range"
            ),
            # A cap of 0 would not pause a contractor, it failed every claim (a negative OFFSET in
            # services._check_caps); to pause one, deactivate the contractor.
            models.CheckConstraint(
                condition=Q(claims_per_hour_cap__isnull=True) | Q(claims_per_hour_cap__gte=1),
                name="policy_hour_cap_positive",
            ),
            models.CheckConstraint(
                condition=Q(claims_per_day_cap__isnull=True) | Q(claims_per_day_cap__gte=1),
                name="policy_day_cap_positive",
            ),
            models.CheckConstraint(condition=Q(ordering__in=[BY_SCORE, FIFO]), name="policy_ordering_valid"),
            models.CheckConstraint(
                condition=Q(weights_source__in=WeightsSource.values), name="policy_weights_source_valid"
            ),
            models.CheckConstraint(
                condition=Q(learned_share__gte=0, learned_share__lte=1), name="policy_learned_share_in_0_1"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.policy} v{self.number}"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for name in ("city_weights", "source_weights", "stage_weights", "plan_weights"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                errors[name] = 'Enter a JSON object of value → multiplier, e.g. {"Mumbai": 1.4}.'
                continue
            for key, weight in value.items():
                if isinstance(key, str) and _UNSTORABLE_CHARS.search(key):
                    errors[name] = (
                        f"{key!r} holds a character that cannot be stored (NUL or a lone surrogate)."
                    )
                elif (
                    not isinstance(weight, int | float)
                    or isinstance(weight, bool)
                    or (isinstance(weight, float) and not math.isfinite(weight))
                ):
                    errors[name] = f"The weight of {key!r} must be a number."
                # Compared as is: a huge JSON integer does not convert to a float.
                elif not MIN_WEIGHT <= weight <= MAX_WEIGHT:
                    errors[name] = f"The weight of {key!r} must be between {MIN_WEIGHT} and {MAX_WEIGHT}."
        if isinstance(self.plan_weights, dict) and set(self.plan_weights) - set(PLANS):
            errors["plan_weights"] = f"Pricing plans are {', '.join(PLANS)}."
        # `not low <= value <= high` also refuses NaN.
        bounded: dict[str, tuple[float, float, str]] = {
            "sla_window_minutes": (*SLA_WINDOW_MINUTES, "minutes"),
            "live_decay_minutes": (*DECAY_RANGE, "minutes"),
            "stale_activity_decay_days": (*DECAY_RANGE, "days"),
            "reschedule_min_hours": (*RESCHEDULE_HOURS, "hours"),
            "reschedule_max_hours": (*RESCHEDULE_HOURS, "hours"),
            "lease_seconds": (*LEASE_SECONDS, "seconds"),
        }
        for name, (low, high, unit) in bounded.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                errors[name] = f"Must be between {_number(low)} and {_number(high)} {unit}."
        activity = self.live_activity_decay_hours
        if activity is not None and activity != 0 and not DECAY_RANGE[0] <= activity <= DECAY_RANGE[1]:
            errors["live_activity_decay_hours"] = (
                f"0 turns it off; else between {_number(DECAY_RANGE[0])} and {_number(DECAY_RANGE[1])} hours."
            )
        protect, window = self.sla_protect_minutes, self.sla_window_minutes
        if window is None or "sla_window_minutes" in errors:
            window = SLA_WINDOW_MINUTES[1]
        # A lead is never further than the window from its deadline: a longer protection
        # would protect nothing more (every never-called live lead is at risk on arrival).
        if protect is not None and not 0 <= protect <= window:
            errors["sla_protect_minutes"] = (
                f"Must be between 0 (off) and the SLA window ({_number(window)} minutes)."
            )
        if self.sla_target is not None and not 0 < self.sla_target <= 1:
            errors["sla_target"] = "The SLA target is a share in (0, 1], e.g. 0.9."
        if (
            self.reschedule_min_hours is not None
            and self.reschedule_max_hours is not None
            and self.reschedule_max_hours < self.reschedule_min_hours
        ):
            errors.setdefault("reschedule_max_hours", "The reschedule window must end after it starts.")
        for name in ("claims_per_hour_cap", "claims_per_day_cap"):
            value = getattr(self, name)
            if value is not None and value < 1:
                errors[name] = "A cap is at least 1 claim; leave it empty for no cap."
        if self.learned_share is not None and not 0 <= self.learned_share <= 1:
            errors["learned_share"] = "The learned share is between 0 (manual only) and 1 (learned only)."
        if self.policy_id is not None:  # a draft (admin form) checks its customer's own
            foreign = foreign_model_error(self.learned_model, customer_id=self.policy.customer_id)
            if foreign is not None:
                errors["learned_model"] = foreign
        if errors:
            raise ValidationError(errors)

    def params(self) -> PolicyParams:
        """The scoring parameters in force: the manual weights, or the learned model's
        multipliers, or both mixed in log space (``manual^(1−s) × learned^s``).

        Learned and blended policies without a model yet score with the manual weights.
        Under a learned model, the manual last-activity decay of live leads gives way to
        the model's recency multipliers (blend: it keeps its share, 1 − s).
        """
        manual = self.manual_params()
        if self.weights_source == WeightsSource.MANUAL or self.learned_model_id is None:
            return manual
        model = self.learned_model
        assert model is not None
        share = 1.0 if self.weights_source == WeightsSource.LEARNED else self.learned_share
        learned = model.multipliers
        note = model.describe()
        if share < 1.0:
            note = f"blend of manual weights and {note} ({share:.0%} learned)"
        activity_hours = manual.live_activity_decay_hours
        return dataclasses.replace(
            manual,
            city_weights=blend_weights(manual.city_weights, learned.get("city", {}), share),
            source_weights=blend_weights(manual.source_weights, learned.get("source", {}), share),
            stage_weights=blend_weights(manual.stage_weights, learned.get("stage", {}), share),
            recency_weights=blend_weights({}, learned.get("recency", {}), share),
            live_activity_decay_hours=activity_hours / (1.0 - share) if share < 1.0 else 0.0,
            model_note=note,
            base_rate=model.base_rate,
        )

    def manual_params(self) -> PolicyParams:
        """The scoring parameters with the hand-set weights, whatever ``weights_source`` says."""
        return PolicyParams(
            version_id=self.pk,
            sla_window_minutes=self.sla_window_minutes,
            sla_protect_minutes=self.sla_protect_minutes,
            live_decay_minutes=self.live_decay_minutes,
            live_activity_decay_hours=self.live_activity_decay_hours,
            stale_activity_decay_days=self.stale_activity_decay_days,
            city_weights=dict(self.city_weights),
            source_weights=dict(self.source_weights),
            stage_weights=dict(self.stage_weights),
            plan_weights=dict(self.plan_weights),
            stale_every=self.stale_every,
            ordering=self.ordering,
        )

    @property
    def reschedule_window(self) -> tuple[dt.timedelta, dt.timedelta]:
        return dt.timedelta(hours=self.reschedule_min_hours), dt.timedelta(hours=self.reschedule_max_hours)


def foreign_model_error(model: "ModelVersion | None", *, customer_id: int | None) -> str | None:
    """Why ``model`` may not score a policy of ``customer_id`` (``None``: the default policy),
    or ``None`` when it may: a policy uses its own customer's models or the pooled ones, never
    another customer's (their multipliers are that customer's business)."""
    if model is None or model.customer_id is None or model.customer_id == customer_id:
        return None
    return f"{model} belongs to another customer: choose a model of this policy's customer, or a pooled one."


_AUDIT_FIELDS = ("id", "policy", "number", "created_at", "created_by", "note")


def version_field_names() -> list[str]:
    """The fields of a version that a policy edit may change (all but identity and audit)."""
    return [f.name for f in PolicyVersion._meta.local_concrete_fields if f.name not in _AUDIT_FIELDS]


def version_values(version: PolicyVersion) -> dict[str, Any]:
    return {name: getattr(version, name) for name in version_field_names()}


class Decision(models.Model):
    """One next-lead answer: who got which lead, for which tuple, why, under which policy."""

    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="decisions", db_index=False)
    contractor = models.ForeignKey(
        Contractor, on_delete=models.PROTECT, related_name="decisions", db_index=False
    )
    campaign_ids = ArrayField(models.BigIntegerField())
    decided_at = models.DateTimeField()
    policy_version = models.ForeignKey(PolicyVersion, on_delete=models.PROTECT, related_name="+")
    band = models.CharField(max_length=10)
    score = models.FloatField(help_text="Score at the moment of the decision (relative worth of a call now).")
    log_score = models.FloatField()
    priority_key = models.FloatField()
    reasons = models.JSONField(default=list)
    lease_expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-decided_at", "-id"]
        indexes = [
            # "Decisions of lead L" (admin inline, outcome idempotency).
            models.Index("lead", models.F("decided_at").desc(), name="decision_lead"),
            # Caps: "claims of contractor C since T"; admin filter by contractor.
            models.Index("contractor", models.F("decided_at").desc(), name="decision_contractor"),
            # Admin list, newest first.
            models.Index(models.F("decided_at").desc(), name="decision_recent"),
        ]

    def __str__(self) -> str:
        return (
            f"Lead {self.lead_id} to contractor {self.contractor_id} at {self.decided_at:%Y-%m-%d %H:%M:%S}"
        )


# --- SLA rollups (kept by prioritization.sla.rollup_sla, read by the SLA figures) -----------


class SlaDailyRollup(models.Model):
    """One campaign's SLA counts and time-to-first-call histogram for one UTC day of
    ``created_at``. Past days are read from here instead of from the leads table; see
    :mod:`prioritization.sla` for the definitions and when a row is (re)computed."""

    customer = models.ForeignKey("leads.Customer", on_delete=models.CASCADE, related_name="+", db_index=False)
    # Derived data: deleting a campaign (only possible without leads) drops its rollups.
    campaign = models.ForeignKey("leads.Campaign", on_delete=models.CASCADE, related_name="+", db_index=False)
    day = models.DateField()
    live_leads = models.PositiveIntegerField(
        help_text="Leads that count for SLA (in SLA + missed + pending)."
    )
    in_sla = models.PositiveIntegerField()
    missed = models.PositiveIntegerField()
    pending = models.PositiveIntegerField(default=0)
    stale_leads = models.PositiveIntegerField(default=0, help_text="Leads sent as stale: never counted.")
    # Leads called, per time-to-first-call bucket of prioritization.sla.TAT_BUCKET_EDGES_SECONDS.
    tat_counts = ArrayField(models.PositiveIntegerField())
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "day"], name="sla_rollup_one_per_campaign_day"),
            models.CheckConstraint(
                condition=Q(live_leads=F("in_sla") + F("missed") + F("pending")),
                name="sla_rollup_counts_add_up",
            ),
        ]
        indexes = [
            # The figures of a range: WHERE customer_id = ANY(K) AND day BETWEEN a AND b.
            models.Index("customer", "day", name="sla_rollup_customer_day"),
        ]

    def __str__(self) -> str:
        return f"SLA of campaign {self.campaign_id} on {self.day:%Y-%m-%d}"


class SlaRollupDay(models.Model):
    """Says that one customer's day is in :class:`SlaDailyRollup` (a day without leads has
    this row and no counts), and with which SLA window: when the customer's window changes,
    the day is read live again until the rollup task has recomputed it."""

    customer = models.ForeignKey("leads.Customer", on_delete=models.CASCADE, related_name="+", db_index=False)
    day = models.DateField()
    window_minutes = models.FloatField()
    tat_buckets = models.PositiveSmallIntegerField(
        help_text="Length of the histogram the rows were made with."
    )
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            # Also the index of "rolled-up days of customers K between a and b".
            models.UniqueConstraint(fields=["customer", "day"], name="sla_rollup_day_one_per_customer_day"),
        ]

    def __str__(self) -> str:
        return f"SLA rollup of customer {self.customer_id} on {self.day:%Y-%m-%d}"


# --- Alerts (raised and cleared by prioritization.alerts.evaluate_alerts) --------------------


class CampaignDemand(models.Model):
    """When contractors last asked for a campaign (and last got nothing), as written by the
    web processes from the next-lead path (:mod:`prioritization.demand`): at most a few
    seconds old per process, never a write per request."""

    campaign = models.OneToOneField(
        "leads.Campaign", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    last_asked_at = models.DateTimeField()
    last_empty_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "campaign demand"

    def __str__(self) -> str:
        return f"Demand for campaign {self.campaign_id}"


class AlertKind(models.TextChoices):
    SLA_AT_RISK = "sla_at_risk", "Projected SLA attainment below target"
    EMPTY_QUEUE = "empty_queue", "Campaign asked for with an empty queue"


class WebhookState(models.TextChoices):
    NONE = "none", "No webhook"
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class Alert(models.Model):
    """One occurrence of a condition, from the evaluation that saw it until the one that no
    longer does. At most one open alert per (kind, customer, campaign): no storms."""

    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    customer = models.ForeignKey("leads.Customer", on_delete=models.CASCADE, related_name="+")
    # Empty for SLA alerts (a customer's figure), set for empty-queue alerts.
    campaign = models.ForeignKey(
        "leads.Campaign", on_delete=models.CASCADE, null=True, blank=True, related_name="+", db_index=False
    )
    opened_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(help_text="Last evaluation that saw the condition.")
    message = models.CharField(max_length=500)
    # The figures behind the message at the last evaluation that saw the condition.
    detail = models.JSONField(default=dict, blank=True)
    opened_webhook = models.CharField(max_length=10, choices=WebhookState.choices, default=WebhookState.NONE)
    resolved_webhook = models.CharField(
        max_length=10, choices=WebhookState.choices, default=WebhookState.NONE
    )
    webhook_error = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=AlertKind.values), name="alert_kind_valid"),
            models.CheckConstraint(
                condition=Q(opened_webhook__in=WebhookState.values, resolved_webhook__in=WebhookState.values),
                name="alert_webhook_state_valid",
            ),
            models.CheckConstraint(
                condition=Q(kind=AlertKind.SLA_AT_RISK, campaign__isnull=True)
                | Q(kind=AlertKind.EMPTY_QUEUE, campaign__isnull=False),
                name="alert_campaign_matches_kind",
            ),
            models.CheckConstraint(
                condition=Q(closed_at__isnull=True) | Q(closed_at__gte=F("opened_at")),
                name="alert_closed_after_opened",
            ),
            # De-duplication: one open alert per condition (NULL campaigns are equal here).
            # Also the index of the admin banner's "open alerts": it holds open rows only.
            models.UniqueConstraint(
                fields=["kind", "customer", "campaign"],
                condition=Q(closed_at__isnull=True),
                nulls_distinct=False,
                name="alert_one_open_per_condition",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message}"

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class SlaSnapshot(models.Model):
    """A customer's SLA counts of today as the last alert evaluation saw them (the SLA
    report, once a minute). /metrics reads these few rows instead of recomputing today's
    figures at every scrape, which costs about a second at a million leads."""

    customer = models.OneToOneField(
        "leads.Customer", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    computed_at = models.DateTimeField()
    target = models.FloatField()
    in_sla = models.PositiveIntegerField()
    missed = models.PositiveIntegerField()
    pending = models.PositiveIntegerField()
    at_risk = models.PositiveIntegerField(help_text="Of the pending leads.")
    contractors_active = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(at_risk__lte=F("pending")), name="sla_snapshot_at_risk_pending"
            ),
        ]

    def __str__(self) -> str:
        return f"SLA of customer {self.customer_id} at {self.computed_at:%Y-%m-%d %H:%M}"


# --- Learned models ------------------------------------------------------------------------------


class TrainingTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Daily schedule"
    ADMIN = "admin", "Train now (admin)"
    COMMAND = "command", "Command line"


class ModelVersion(models.Model):
    """One trained conversion model of a customer, or the pooled model (customer empty).

    Immutable, like policy versions: a policy version points at the model version it
    scores with, so a stored key always names the multipliers it was computed from.
    Scoring needs only ``multipliers`` (feature → value → odds multiplier) and
    ``base_rate``; the rest records how the model was made and how good it is.
    """

    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="model_versions",
        help_text="Empty for the pooled model (every customer's outcomes): the prior of customers' models.",
    )
    number = models.PositiveIntegerField()
    trained_at = models.DateTimeField()
    trigger = models.CharField(max_length=10, choices=TrainingTrigger.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The created_at range of the outcomes the fit saw (every customer's: the pooled prior).
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    training_rows = models.PositiveIntegerField(
        help_text="This customer's outcomes (all, for the pooled model)."
    )
    positive_rows = models.PositiveIntegerField(help_text="Of which converted.")
    holdout_rows = models.PositiveIntegerField(
        help_text="Of which in the time-ordered holdout (the newest 20% of outcomes) behind the metrics."
    )
    all_rows = models.PositiveIntegerField(help_text="Outcomes of every customer in the fit.")
    base_rate = models.FloatField(help_text="Conversion rate of the outcomes (pooled rate without any).")
    multipliers = models.JSONField(
        default=dict, help_text='Feature → value → odds multiplier, e.g. {"source": {"Referral": 2.1}}.'
    )
    metrics = models.JSONField(default=dict)
    settings = models.JSONField(default=dict)
    training_seconds = models.FloatField(default=0.0)

    class Meta:
        ordering = ["-trained_at", "-id"]
        constraints = [
            # Also serves "the newest model of customer C" (ORDER BY number DESC LIMIT 1).
            models.UniqueConstraint(
                fields=["customer", "number"], nulls_distinct=False, name="model_version_number_unique"
            ),
            models.CheckConstraint(
                condition=Q(trigger__in=TrainingTrigger.values), name="model_version_trigger_valid"
            ),
            models.CheckConstraint(
                condition=Q(base_rate__gte=0, base_rate__lte=1), name="model_version_base_rate_in_0_1"
            ),
        ]

    def __str__(self) -> str:
        owner = self.customer.name if self.customer_id is not None and self.customer else "pooled"
        return f"{owner} model v{self.number} ({self.trained_at:%Y-%m-%d %H:%M})"

    @property
    def is_pooled(self) -> bool:
        return self.customer_id is None

    def describe(self) -> str:
        """How explanations name the model: "learned model v3", "pooled model v3"."""
        return f"{'pooled' if self.is_pooled else 'learned'} model v{self.number}"


class SimulationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class SimulationRun(models.Model):
    """One policy comparison started from the admin: a customer's draft policy against the
    policy in force for it and FIFO, simulated in the background (prioritization.simulation)."""

    customer = models.ForeignKey(
        Customer,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Whose policy in force the draft is compared with.",
    )
    # The draft's settings: every PolicyVersion settings field, as JSON values.
    draft = models.JSONField(default=dict)
    # The policy in force for the customer when the run was asked for, and its label.
    active = models.JSONField(default=dict)
    active_label = models.CharField(max_length=200, blank=True, default="")
    # Scenario options: contractors, days, seed, … (prioritization.simulation.scenario).
    parameters = models.JSONField(default=dict)
    status = models.CharField(
        max_length=10, choices=SimulationStatus.choices, default=SimulationStatus.QUEUED
    )
    # The comparison's JSON object: figures per policy and the scenario (empty until done).
    results = models.JSONField(default=dict, blank=True)
    # The chart, kept in the row so that web and worker machines share no file storage (~60 kB).
    chart_png = models.BinaryField(blank=True, default=b"")
    message = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # When its task was last sent to the workers: a run still queued a while later is sent
    # again (prioritization.tasks.sweep_simulation_runs), as the broker may have lost it.
    sent_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=SimulationStatus.values), name="simulation_run_status_valid"
            ),
        ]
        indexes = [
            # The admin list, newest first.
            models.Index(models.F("created_at").desc(), name="simulation_run_recent"),
        ]

    def __str__(self) -> str:
        return f"Simulation {self.pk} ({self.status})"

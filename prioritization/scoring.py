"""Pure scoring: lead facts + policy + ``now`` → score, band and reasons.

No queries, no clock reads: everything comes in as arguments, so the same functions
serve the claim path, rescoring, the admin preview, the simulator and the tests' oracle.

The score of a lead is an estimate of "how much a call now is worth", in log space:

- live lead:  log s = log base − wait / τ            (wait = now − due_at, τ = decay minutes)
- stale lead: log s = log base − activity_age / τs   (activity_age = now − last_activity)

where ``base`` multiplies the policy's weights for the lead's city, source, stage and
pricing plan (values without a weight weigh 1; an empty value is looked up as
``(unknown)``) and, for live leads, how fresh the lead's last activity was when it
arrived. A policy that uses a learned model (see :mod:`prioritization.learning`) brings
its multipliers in through the same weights, plus one per recency bin (how long before
arriving the lead was last active): the model is fitted offline, scoring only multiplies.

Because time enters only through ``− now / τ`` and τ is one number per policy, time
never reorders the leads of one campaign: their order is the stored key
``log base + anchor / τ`` (anchor = due_at or last_activity, in minutes), and
``log s = key − now / τ`` compares the best lead of each campaign at the instant.

Bands come before scores: a live lead never called whose SLA deadline falls within the
policy's protection window is *at risk* and goes first (earliest deadline first), then
live leads by score, then stale leads by score. A policy may reserve every n-th claim
of a contractor for the best stale lead, so stale leads are never starved.
"""

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property
from typing import NamedTuple

# Keys count minutes from this origin so that anchor / τ stays small and exact.
EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
SECONDS_PER_MINUTE = 60.0
LIVE = "live"
STALE = "stale"
# How a policy orders leads: by score (below), or first in, first out (today's behaviour,
# kept so that the simulator can compare against it).
BY_SCORE = "score"
FIFO = "fifo"


# An empty value (no city given, ...) is weighed under this name, by hand-set weights and
# learned models alike: "unknown" is information too (X Education's leads without a city
# convert differently from those with one).
UNKNOWN_VALUE = "(unknown)"
# The learned models' name for how long before arriving a lead was last active.
RECENCY = "recency"
# How long before arriving a lead was last active, in the bins a learned model weighs:
# (upper bound in hours, exclusive; label). A lead without last_activity is UNKNOWN_VALUE.
RECENCY_BINS: tuple[tuple[float, str], ...] = (
    (1.0, "under 1 h"),
    (24.0, "1-24 h"),
    (168.0, "1-7 days"),
    (720.0, "7-30 days"),
    (math.inf, "over 30 days"),
)


def recency_label(hours: float | None) -> str:
    """The recency bin of a lead last active ``hours`` before arriving (negative: after)."""
    if hours is None:
        return UNKNOWN_VALUE
    for bound, label in RECENCY_BINS:
        if hours < bound:
            return label
    return RECENCY_BINS[-1][1]  # NaN


def minutes_since_epoch(moment: dt.datetime) -> float:
    return (moment - EPOCH).total_seconds() / SECONDS_PER_MINUTE


class Band(IntEnum):
    """Higher bands are served first, whatever the scores."""

    STALE = 0
    LIVE = 1
    AT_RISK = 2


@dataclass(frozen=True)
class PolicyParams:
    """The scoring part of a priority policy version (see prioritization.models)."""

    version_id: int = 0
    sla_window_minutes: float = 30.0
    sla_protect_minutes: float = 10.0
    live_decay_minutes: float = 20.0
    live_activity_decay_hours: float = 0.0  # 0 = last_activity does not count for live leads
    stale_activity_decay_days: float = 14.0
    city_weights: Mapping[str, float] = field(default_factory=dict)
    source_weights: Mapping[str, float] = field(default_factory=dict)
    stage_weights: Mapping[str, float] = field(default_factory=dict)
    plan_weights: Mapping[str, float] = field(default_factory=dict)
    stale_every: int = 0  # n > 0: every n-th claim of a contractor prefers the best stale lead
    ordering: str = BY_SCORE  # FIFO: earliest due first, live and stale alike, no weights or SLA band
    # From a learned model (empty for hand-set weights): a multiplier per recency bin, the
    # words that name the model in explanations, and the conversion rate it was trained on.
    recency_weights: Mapping[str, float] = field(default_factory=dict)
    model_note: str = ""
    base_rate: float | None = None

    @cached_property
    def log_weights(self) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, float]]:
        """log of each weight, for the hot path of key computation (sums instead of products)."""
        return tuple(  # type: ignore[return-value]
            {value: math.log(weight) for value, weight in weights.items() if value and weight != 1.0}
            for weights in (self.city_weights, self.source_weights, self.stage_weights, self.plan_weights)
        )

    @cached_property
    def log_recency(self) -> dict[str, float]:
        return {label: math.log(weight) for label, weight in self.recency_weights.items() if weight != 1.0}

    @property
    def fifo(self) -> bool:
        return self.ordering == FIFO

    @property
    def live_rate(self) -> float:
        """How fast log score falls per minute of waiting."""
        return 0.0 if self.fifo else 1.0 / self.live_decay_minutes

    @property
    def stale_rate(self) -> float:
        return 0.0 if self.fifo else 1.0 / (self.stale_activity_decay_days * 24 * 60)


def blend_weights(
    manual: Mapping[str, float], learned: Mapping[str, float], share: float
) -> dict[str, float]:
    """Weights mixed in log space: ``manual^(1 − share) × learned^share`` per value, a value
    missing on one side weighing 1 there (share 1: the learned weights alone)."""
    if share >= 1.0:
        return dict(learned)
    if share <= 0.0:
        return dict(manual)
    return {
        value: math.exp(
            (1.0 - share) * math.log(manual.get(value, 1.0)) + share * math.log(learned.get(value, 1.0))
        )
        for value in manual.keys() | learned.keys()
    }


class LeadFacts(NamedTuple):
    """What scoring needs to know about a lead (a tuple: built once per lead on hot paths)."""

    lead_type: str
    city: str
    source: str
    stage: str
    pricing_plan: str
    created_at: dt.datetime
    due_at: dt.datetime
    last_activity: dt.datetime | None
    first_attempt_at: dt.datetime | None = None


@dataclass(frozen=True)
class Factor:
    """One multiplicative part of a score, with the words that explain it."""

    label: str
    multiplier: float

    def describe(self) -> str:
        return f"{self.label}: ×{self.multiplier:.2g}"


def _weight(weights: Mapping[str, float], value: str) -> float:
    """Values without a weight are neutral; an empty value is weighed as UNKNOWN_VALUE."""
    return float(weights.get(value or UNKNOWN_VALUE, 1.0))


def recency_bin(facts: LeadFacts) -> str:
    """How long before arriving the lead was last active (time-invariant: a stored key may use it)."""
    if facts.last_activity is None:
        return UNKNOWN_VALUE
    return recency_label((facts.created_at - facts.last_activity).total_seconds() / 3600)


def _recency_words(label: str) -> str:
    return "last activity unknown" if label == UNKNOWN_VALUE else f"last active {label} before arriving"


def attribute_factors(facts: LeadFacts, policy: PolicyParams) -> list[Factor]:
    """The time-independent factors of ``base``: weights and, for live leads, freshness."""
    factors = []
    for label, weights, value in (
        ("city", policy.city_weights, facts.city),
        ("source", policy.source_weights, facts.source),
        ("stage", policy.stage_weights, facts.stage),
        ("plan", policy.plan_weights, facts.pricing_plan),
    ):
        multiplier = _weight(weights, value)
        if multiplier != 1.0:
            factors.append(Factor(f"{label} = {value}" if value else f"{label} unknown", multiplier))
    if policy.recency_weights:
        label = recency_bin(facts)
        multiplier = _weight(policy.recency_weights, label)
        if multiplier != 1.0:
            factors.append(Factor(_recency_words(label), multiplier))
    if (
        facts.lead_type == LIVE
        and policy.live_activity_decay_hours > 0
        and facts.last_activity is not None
        and facts.last_activity < facts.created_at
    ):
        hours = (facts.created_at - facts.last_activity).total_seconds() / 3600
        factors.append(
            Factor(
                f"last active {hours:.0f} h before arriving",
                math.exp(-hours / policy.live_activity_decay_hours),
            )
        )
    return factors


def _anchor(facts: LeadFacts) -> dt.datetime:
    """The moment time is counted from: when a live lead became due; when a stale lead
    was last active (unknown: when we got it)."""
    if facts.lead_type == LIVE:
        return facts.due_at
    return facts.last_activity or facts.created_at


def decay_rate(lead_type: str, policy: PolicyParams) -> float:
    return policy.live_rate if lead_type == LIVE else policy.stale_rate


def log_base(facts: LeadFacts, policy: PolicyParams) -> float:
    """log of ``base``: the sum of the logs of :func:`attribute_factors`, computed without
    building them (this runs once per imported lead)."""
    city, source, stage, plan = policy.log_weights
    unknown = UNKNOWN_VALUE
    total = (
        city.get(facts.city or unknown, 0.0)
        + source.get(facts.source or unknown, 0.0)
        + stage.get(facts.stage or unknown, 0.0)
        + plan.get(facts.pricing_plan or unknown, 0.0)
    )
    if policy.recency_weights:
        total += policy.log_recency.get(recency_bin(facts), 0.0)
    if (
        facts.lead_type == LIVE
        and policy.live_activity_decay_hours > 0
        and facts.last_activity is not None
        and facts.last_activity < facts.created_at
    ):
        total -= (
            (facts.created_at - facts.last_activity).total_seconds() / 3600 / policy.live_activity_decay_hours
        )
    return total


def priority_key(facts: LeadFacts, policy: PolicyParams) -> float:
    """The stored ordering key: log base + anchor / τ (minutes). Time never changes it.

    FIFO: minus the minutes at which the lead became due, so the earliest goes first."""
    if policy.fifo:
        return -minutes_since_epoch(facts.due_at)
    return log_base(facts, policy) + minutes_since_epoch(_anchor(facts)) * decay_rate(facts.lead_type, policy)


def sla_deadline(facts: LeadFacts, policy: PolicyParams) -> dt.datetime | None:
    """When a live lead's first call must have started to be served in SLA."""
    if facts.lead_type != LIVE:
        return None
    return facts.created_at + dt.timedelta(minutes=policy.sla_window_minutes)


# exp() of a log score outside this range over- or underflows a float.
_LOG_SCORE_LIMIT = 700.0


def score_from_log(log_score: float) -> float:
    """The score (relative worth of a call now) of a log score, kept within a float's range:
    FIFO keys are minus minutes since 2020, far below any exp() can represent."""
    return math.exp(min(max(log_score, -_LOG_SCORE_LIMIT), _LOG_SCORE_LIMIT))


def log_score_at(key: float, lead_type: str, policy: PolicyParams, now: dt.datetime) -> float:
    """The log score at ``now`` of a lead with stored key ``key``."""
    return key - minutes_since_epoch(now) * decay_rate(lead_type, policy)


def band_at(
    *,
    lead_type: str,
    first_attempt_at: dt.datetime | None,
    deadline: dt.datetime | None,
    policy: PolicyParams,
    now: dt.datetime,
) -> Band:
    if policy.fifo:
        return Band.LIVE
    if lead_type != LIVE:
        return Band.STALE
    if (
        first_attempt_at is None
        and deadline is not None
        and now < deadline <= now + dt.timedelta(minutes=policy.sla_protect_minutes)
    ):
        return Band.AT_RISK
    return Band.LIVE


@dataclass(frozen=True)
class Candidate:
    """A claimable lead as the claim query or the oracle sees it."""

    lead_id: int
    lead_type: str
    key: float
    deadline: dt.datetime | None
    first_attempt_at: dt.datetime | None
    policy: PolicyParams


@dataclass(frozen=True)
class Ranked:
    candidate: Candidate
    band: Band
    log_score: float

    @property
    def sort_key(self) -> tuple[float, ...]:
        """Ascending sort puts the lead to serve first. Ties: lower lead id first."""
        if self.band == Band.AT_RISK:
            assert self.candidate.deadline is not None
            return (-self.band, self.candidate.deadline.timestamp(), self.candidate.lead_id)
        return (-self.band, -self.log_score, self.candidate.lead_id)


def rank(candidate: Candidate, now: dt.datetime) -> Ranked:
    band = band_at(
        lead_type=candidate.lead_type,
        first_attempt_at=candidate.first_attempt_at,
        deadline=candidate.deadline,
        policy=candidate.policy,
        now=now,
    )
    return Ranked(candidate, band, log_score_at(candidate.key, candidate.lead_type, candidate.policy, now))


def wants_stale(*, claims_so_far: int, stale_every: int) -> bool:
    """Is this claim (the contractor's ``claims_so_far + 1``-th) reserved for a stale lead?"""
    return stale_every > 0 and (claims_so_far + 1) % stale_every == 0


def choose(
    candidates: Sequence[Candidate], *, now: dt.datetime, claims_so_far: int, stale_every: int
) -> Ranked | None:
    """The lead to hand out: best band, then best score; a reserved claim takes the best
    stale lead when there is one."""
    if not candidates:
        return None
    ranked = sorted((rank(candidate, now) for candidate in candidates), key=lambda r: r.sort_key)
    if wants_stale(claims_so_far=claims_so_far, stale_every=stale_every):
        stale = [r for r in ranked if r.band == Band.STALE]
        if stale:
            return stale[0]
    return ranked[0]


def explain(facts: LeadFacts, policy: PolicyParams, *, now: dt.datetime, band: Band) -> list[str]:
    """Reasons behind a score, in words a product person reads.

    Every reason but two ends in its multiplier, and those multiply back to the score:
    the SLA line (the band, not the score) and, under a learned model, the base rate the
    model was trained on (the reference the multipliers are relative to)."""
    if policy.fifo:
        waited = max(0.0, (now - facts.due_at).total_seconds() / 60)
        return [f"first in, first out: due {waited:.0f} min ago"]
    reasons = []
    if band == Band.AT_RISK:
        deadline = sla_deadline(facts, policy)
        assert deadline is not None
        minutes = (deadline - now).total_seconds() / 60
        reasons.append(f"SLA deadline in {minutes:.0f} min: served first")
    if policy.base_rate is not None:
        reasons.append(f"{policy.model_note}: base rate {policy.base_rate:.0%}")
    # Strongest first: the top reasons are the ones that moved the score most.
    factors = sorted(
        attribute_factors(facts, policy), key=lambda f: -abs(math.log(max(f.multiplier, 1e-300)))
    )
    reasons.extend(factor.describe() for factor in factors)
    if facts.lead_type == LIVE:
        waited = max(0.0, (now - facts.due_at).total_seconds() / 60)
        reasons.append(Factor(f"waited {waited:.0f} min", math.exp(-waited * policy.live_rate)).describe())
    else:
        anchor = _anchor(facts)
        days = max(0.0, (now - anchor).total_seconds() / 86400)
        known = "last active" if facts.last_activity else "no activity known; received"
        reasons.append(
            Factor(
                f"stale, {known} {days:.0f} days ago", math.exp(-days * 1440 * policy.stale_rate)
            ).describe()
        )
    return reasons
